import type pg from 'pg'
import { KeelError } from '../errors.js'
import { watchAbort } from './abort-watch.js'
import type { ConnectionGovernor, GovernedPool } from './connection-governor.js'
import type { HostInfo } from './host-info.js'
import { evictIdleClient, setPoolMax } from './pg-internals.js'
import { abortError } from './tenant-limiter.js'

/** A call waiting for one of the pool's connections (a permit of the server's budget). */
interface SlotWaiter {
  settled: boolean
  take(): void
  fail(error: Error): void
}

/**
 * A HostPool's side of the server's connection budget (`database` mode, ADR 0033): the pool opens a
 * connection only within the permits it holds, takes one more from the governor (up to pool.max) when
 * its calls need it, and gives a permit back once the connection behind it has ended, so the server
 * never sees more of this process's connections than `tenancy.maxConnections`. pg-pool's own max
 * follows the permits held.
 */
export class GovernedSlots implements GovernedPool {
  readonly #governor: ConnectionGovernor
  readonly #pool: pg.Pool
  readonly #max: number
  readonly #info: HostInfo
  /** Connections this pool may have open (permits held). */
  #permits = 0
  /** Calls holding a connection or about to take one. */
  #inUse = 0
  /** Connections opened and not yet ended: a closing one still counts on the server. */
  #live = 0
  readonly #waiters: SlotWaiter[] = []
  #ended = false
  lastUsedAt = 0

  constructor(governor: ConnectionGovernor, pool: pg.Pool, max: number, info: HostInfo) {
    this.#governor = governor
    this.#pool = pool
    this.#max = max
    this.#info = info
    // No connection until a permit is held (pg-pool would read a max of 0 in its options as "10").
    setPoolMax(pool, 0)
    pool.on('connect', (client) => {
      this.#live++
      client.once('end', () => {
        this.#live--
        this.#settle()
      })
    })
    governor.join(this)
  }

  /**
   * Room for one more call's connection within the permits held, else one more permit from the
   * server's budget (up to pool.max), else a wait in the server's line, bounded by `timeoutMs`
   * (KEEL_POOL_TIMEOUT). True when taken at once.
   */
  take(timeoutMs: number, signal: AbortSignal | undefined): true | Promise<void> {
    const governor = this.#governor
    if (this.#inUse < this.#permits) {
      this.#inUse++
      return true
    }
    if (this.#permits < this.#max && governor.tryTake()) {
      this.#grow()
      this.#inUse++
      return true
    }
    return new Promise<void>((resolve, reject) => {
      let unwatch: (() => void) | undefined
      const finish = () => {
        waiter.settled = true
        clearTimeout(timer)
        unwatch?.()
        const index = this.#waiters.indexOf(waiter)
        if (index >= 0) this.#waiters.splice(index, 1)
      }
      const fail = (error: Error) => {
        if (waiter.settled) return
        finish()
        reject(error)
        // A permit that came in for this call and is not needed now goes back.
        this.#settle()
      }
      const waiter: SlotWaiter = {
        settled: false,
        take: () => {
          finish()
          this.#inUse++
          resolve()
        },
        fail,
      }
      const timer = setTimeout(() => {
        const error = this.#timeoutError(timeoutMs)
        fail(error)
        governor.exhausted()
      }, timeoutMs)
      if (signal !== undefined) unwatch = watchAbort(signal, () => fail(abortError(signal)))
      this.#waiters.push(waiter)
      if (this.#permits < this.#max) governor.request(this)
    })
  }

  /**
   * A call gave its connection back (or never got one). `nextSince`: when the tenant's next call, to
   * which the tenant limiter just passed its permit, started waiting. The connection goes to whoever
   * has waited longest on this server: a call waiting here, that next call (it finds the connection
   * idle), or another database's waiter (the connection is closed for it). Keeping it for the next
   * call saves a reconnect; handing it on when another waited longer keeps the line fair.
   */
  release(nextSince?: number): void {
    this.#inUse--
    this.lastUsedAt = performance.now()
    const next = this.#waiters.find((w) => !w.settled)
    if (next !== undefined) {
      next.take()
      return
    }
    const oldest = this.#governor.oldestWaitingSince()
    if (nextSince !== undefined && (oldest === undefined || nextSince < oldest)) return
    this.#settle()
    // An idle connection now: a waiter of another pool may have it closed for its own.
    this.#governor.poke()
  }

  /** Offers this pool's idle connections to the server's line (a call that would have taken one left). */
  handOn(): void {
    this.#settle()
    this.#governor.poke()
  }

  /** Whether a call would wait for a connection here. */
  saturated(): boolean {
    return this.#inUse >= this.#permits && (this.#permits >= this.#max || !this.#governor.hasFree())
  }

  /** Fails every call waiting for a permit here (the primary was found down: none would come in time). */
  failWaiters(error: KeelError): void {
    for (const waiter of [...this.#waiters]) waiter.fail(error)
  }

  /** Fails every waiting call (keel.close() ran out of time) and leaves the budget. */
  end(abandon: KeelError | undefined): void {
    this.#ended = true
    if (abandon !== undefined) for (const waiter of [...this.#waiters]) waiter.fail(abandon)
    this.#governor.leave(this)
  }

  offer(): boolean {
    const next = this.#waiters.find((w) => !w.settled)
    if (next === undefined || this.#permits >= this.#max || this.#ended) return false
    this.#grow()
    next.take()
    return true
  }

  starving(): boolean {
    return this.#permits === 0 && this.wantsPermit()
  }

  wantsPermit(): boolean {
    return !this.#ended && this.#permits < this.#max && this.#waiters.some((w) => !w.settled)
  }

  evictable(): number {
    return Math.max(0, Math.min(this.#pool.idleCount, this.#pool.totalCount - this.#inUse))
  }

  /**
   * Closes the longest-idle connection for another pool. Its permit leaves this pool at once (a call
   * arriving here meanwhile must not reopen it) and reaches the governor once the connection is closed.
   */
  evictIdle(closed: () => void): boolean {
    if (this.evictable() <= 0) return false
    if (!evictIdleClient(this.#pool, closed)) return false
    this.#permits--
    setPoolMax(this.#pool, this.#permits)
    return true
  }

  /** Permits held, calls holding or taking a connection, calls waiting: for health output. */
  snapshot(): { held: number; inUse: number; waiting: number } {
    return {
      held: this.#permits,
      inUse: this.#inUse,
      waiting: this.#waiters.filter((w) => !w.settled).length,
    }
  }

  #grow(): void {
    this.#permits++
    setPoolMax(this.#pool, this.#permits)
  }

  /** Hands free permits to waiting calls, then gives back those backed by no connection and no call. */
  #settle(): void {
    for (;;) {
      const next = this.#waiters.find((w) => !w.settled)
      if (next === undefined || this.#inUse >= this.#permits) break
      next.take()
    }
    const spare = this.#permits - Math.max(this.#pool.totalCount, this.#live, this.#inUse)
    if (spare <= 0) return
    this.#permits -= spare
    setPoolMax(this.#pool, this.#permits)
    this.#governor.give(spare)
  }

  #timeoutError(timeoutMs: number): KeelError {
    const budget = this.#governor.snapshot()
    const info = this.#info
    return new KeelError(
      'KEEL_POOL_TIMEOUT',
      `no connection to ${info.address}:${info.port} became available within tenancy.maxConnections (${budget.max}) in ${timeoutMs} ms`,
      {
        details: {
          host: info.name,
          address: info.address,
          port: info.port,
          database: info.database,
          maxConnections: budget.max,
          waiting: budget.waiting,
        },
      },
    )
  }
}
