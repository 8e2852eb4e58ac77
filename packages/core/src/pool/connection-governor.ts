/**
 * What the governor asks of a pool on its server (HostPool in `database` mode).
 */
export interface GovernedPool {
  /** Takes a permit offered to it; false when it no longer needs one (its waiter gave up, say). */
  offer(): boolean
  /** Whether a call of this pool waits for a permit now. */
  wantsPermit(): boolean
  /** Waits with no connection at all: only such a pool has others' idle connections closed for it. */
  starving(): boolean
  /** Idle connections no call is about to take: what the pool can give up. */
  evictable(): number
  /**
   * Closes its least recently used idle connection and gives up its permit; `closed` runs once the
   * connection has ended, and the governor hands the permit on then (never earlier: the server would
   * see both connections at once).
   */
  evictIdle(closed: () => void): boolean
  /** performance.now() of the pool's last release: the least recently used pool gives up first. */
  readonly lastUsedAt: number
}

export interface GovernorSnapshot {
  readonly max: number
  /** Connections open or being opened, and the replica monitor's. */
  readonly used: number
  /** Permits calls wait for. */
  readonly waiting: number
}

/**
 * Caps this process's connections to one Postgres server (host:port) across every database pool on it
 * (`tenancy.maxConnections`, ADR 0033). A pool holds one permit per connection it has open or is
 * opening; it takes one before opening a connection and gives it back once that connection has closed.
 * When none is free, the least recently used pool's idle connections are closed for the waiters; calls
 * wait in one FIFO line across pools, so no database's burst keeps another's waiting forever, and a
 * pool never holds more than its own `postgres.pool.max` (the per-tenant limits apply inside it).
 */
export class ConnectionGovernor {
  readonly server: string
  readonly max: number
  #used = 0
  readonly #members = new Set<GovernedPool>()
  /** One entry per waiting call: its pool, and since when (performance.now()). */
  #queue: Array<{ readonly pool: GovernedPool; readonly since: number }> = []
  /** Permits being freed by evictions under way: not counted twice when deciding to evict more. */
  #evicting = 0

  readonly #onExhausted: (governor: ConnectionGovernor) => void

  /** `onExhausted`: a call gave up waiting for a permit (the budget signal: metric and log). */
  constructor(server: string, max: number, onExhausted: (governor: ConnectionGovernor) => void = () => {}) {
    this.server = server
    this.max = max
    this.#onExhausted = onExhausted
  }

  /** A call waited its whole acquire timeout here. */
  exhausted(): void {
    this.#onExhausted(this)
  }

  join(pool: GovernedPool): void {
    this.#members.add(pool)
  }

  leave(pool: GovernedPool): void {
    this.#members.delete(pool)
    this.#queue = this.#queue.filter((entry) => entry.pool !== pool)
  }

  /**
   * Connections held outside the pools (the replica monitor's probe, one per server), counted against
   * the cap for as long as they exist.
   */
  reserve(n: number): void {
    this.#used += n
  }

  /** A permit at once, or false. Never jumps the line: with calls waiting, the newcomer waits too. */
  tryTake(): boolean {
    if (this.#used >= this.max || this.#queue.some((entry) => entry.pool.wantsPermit())) return false
    this.#used++
    return true
  }

  hasFree(): boolean {
    return this.#used < this.max
  }

  /** A call of `pool` waits for a permit: offered in turn as permits come back, reclaiming idle ones. */
  request(pool: GovernedPool): void {
    this.#queue.push({ pool, since: performance.now() })
    this.#pump()
  }

  /**
   * When the call that has waited longest here for a database with no connection at all started
   * waiting; undefined when there is none. A pool that releases a connection weighs its own next call
   * against that one only: a database that has a connection makes progress on it, and closing one
   * database's connection to open another's second costs two connection setups for nothing.
   */
  oldestWaitingSince(): number | undefined {
    // Asked on every release of a governed connection: nothing to look at in the usual case.
    if (this.#queue.length === 0) return undefined
    this.#queue = this.#queue.filter((entry) => entry.pool.wantsPermit())
    return this.#queue.find((entry) => entry.pool.starving())?.since
  }

  /** `n` connections of a pool have closed (or permits it took are not needed after all). */
  give(n: number): void {
    this.#used = Math.max(0, this.#used - n)
    this.#pump()
  }

  /** Idle connections may be wanted by a waiter now (a pool released one). */
  poke(): void {
    this.#pump()
  }

  snapshot(): GovernorSnapshot {
    return {
      max: this.max,
      used: this.#used,
      waiting: this.#queue.filter((entry) => entry.pool.wantsPermit()).length,
    }
  }

  #pump(): void {
    // Databases with no connection first (in arrival order), then those asking for one more.
    for (const starvingOnly of [true, false]) {
      for (const entry of [...this.#queue]) {
        if (this.#used >= this.max) break
        const pool = entry.pool
        if (!pool.wantsPermit() || (starvingOnly && !pool.starving())) continue
        this.#queue.splice(this.#queue.indexOf(entry), 1)
        this.#used++
        if (!pool.offer()) this.#used--
      }
    }
    this.#queue = this.#queue.filter((entry) => entry.pool.wantsPermit())
    this.#reclaim()
  }

  /**
   * Closes idle connections of the least recently used pools for the databases that have none. A
   * database that has a connection waits for it (or for a free permit) instead: evicting for it would
   * trade one reconnect for another and, under spread load, make every call a reconnect.
   */
  #reclaim(): void {
    const starving = new Set(this.#queue.filter((entry) => entry.pool.starving()).map((entry) => entry.pool))
    let short = starving.size - this.#evicting
    if (short <= 0) return
    const waiting = new Set(this.#queue.map((entry) => entry.pool))
    const donors = [...this.#members]
      .filter((p) => p.evictable() > 0)
      // A pool with calls of its own waiting keeps its idle connections for them.
      .sort((a, b) => Number(waiting.has(a)) - Number(waiting.has(b)) || a.lastUsedAt - b.lastUsedAt)
    for (const donor of donors) {
      while (short > 0 && donor.evictable() > 0) {
        const started = donor.evictIdle(() => {
          this.#evicting--
          this.give(1)
        })
        if (!started) break
        this.#evicting++
        short--
      }
      if (short <= 0) return
    }
  }
}
