/** A command in flight: ioredis's `Command` has exactly these members. */
export interface Deadlined {
  /** Set once the reply resolved it. */
  readonly isResolved: boolean
  reject(error: Error): void
}

/**
 * Rejects the commands that got no reply within `timeoutMs`, with one timer for all of them. ioredis's
 * own `commandTimeout` arms and clears a timer per command, which costs about 2 µs, 5 % of a loopback
 * round trip (bench/results/cache.md): on the Redis-hit path that is as much as the rest of keel's work.
 * The timer is armed when a command is tracked and none is pending, and on expiry rejects what is overdue
 * and re-arms for the oldest command still waiting, so a command fails between `timeoutMs` and about a
 * millisecond later, as with ioredis's timer. Commands of one connection are answered in order, so
 * the queue is kept short by dropping answered commands from its head on every `track`.
 */
export class CommandDeadlines {
  readonly #timeoutMs: number
  readonly #commands: Deadlined[] = []
  readonly #deadlines: number[] = []
  #timer: NodeJS.Timeout | undefined

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  track(command: Deadlined): void {
    const commands = this.#commands
    let answered = 0
    while (answered < commands.length && commands[answered]!.isResolved) answered++
    if (answered > 0) this.#drop(answered)
    commands.push(command)
    this.#deadlines.push(Date.now() + this.#timeoutMs)
    if (this.#timer === undefined) this.#arm(this.#timeoutMs)
  }

  /** Tracks a promise that is not an ioredis command (a script, a transaction): rejects it when overdue. */
  within<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { isResolved: false, reject }
      promise.then(
        (value) => {
          entry.isResolved = true
          resolve(value)
        },
        (error: unknown) => {
          entry.isResolved = true
          reject(error)
        },
      )
      this.track(entry)
    })
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, ms))
    this.#timer.unref()
  }

  #expire(): void {
    this.#timer = undefined
    const now = Date.now()
    const commands = this.#commands
    const deadlines = this.#deadlines
    let done = 0
    while (done < commands.length) {
      const command = commands[done]!
      if (!command.isResolved) {
        if (deadlines[done]! > now) break
        command.reject(new Error(`Command timed out after ${this.#timeoutMs} ms`))
      }
      done++
    }
    if (done > 0) this.#drop(done)
    if (commands.length > 0) this.#arm(deadlines[0]! - now)
  }

  #drop(n: number): void {
    if (n === 1) {
      this.#commands.shift()
      this.#deadlines.shift()
    } else {
      this.#commands.splice(0, n)
      this.#deadlines.splice(0, n)
    }
  }
}
