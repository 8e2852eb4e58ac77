/**
 * Counts the calls keel accepted and has not settled (a query queued for a connection, a transaction
 * in progress), so keel.close() can let them finish before it ends the pools.
 */
export class InFlight {
  #count = 0
  #waiters: Array<() => void> = []

  get count(): number {
    return this.#count
  }

  enter(): void {
    this.#count++
  }

  leave(): void {
    if (--this.#count > 0) return
    const waiters = this.#waiters
    this.#waiters = []
    for (const resolve of waiters) resolve()
  }

  /** Resolves true once nothing is in flight, or false after `timeoutMs` (0 = wait however long). */
  settled(timeoutMs: number): Promise<boolean> {
    if (this.#count === 0) return Promise.resolve(true)
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined
      const done = () => {
        clearTimeout(timer)
        resolve(true)
      }
      this.#waiters.push(done)
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== done)
          resolve(false)
        }, timeoutMs)
      }
    })
  }
}
