import pg from 'pg'
import type { Logger } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import { watchAbort } from './abort-watch.js'
import type { ConnectionGovernor } from './connection-governor.js'
import { clientDeadlineMs, hostTimeoutError } from './deadline.js'
import { GovernedSlots } from './governed-slots.js'
import { type HostConfig, type HostInfo, hostInfo } from './host-info.js'
import { hostUnavailable, primaryDownError } from './host-unavailable.js'
import { detectDirect, Lease } from './lease.js'
import { backendKeyOf, newCancelConnection } from './pg-internals.js'
import { abortError, TenantLimiter } from './tenant-limiter.js'

/** How often a host checks its statements' client-side deadlines (they fire at most this late). */
const SWEEP_MS = 100

export interface PoolSettings {
  /** Statements kept prepared per connection (postgres.statementCacheSize). */
  statementCacheSize: number
  max: number
  idleTimeoutMs: number
  connectionTimeoutMs: number
  maxUses: number
  keepAlive: boolean
  keepAliveInitialDelayMs: number
  queryTimeoutMs?: number | undefined
  applicationName: string
  /** How long past a statement timeout or an abort the server has to answer. */
  timeoutGraceMs: number
}

export interface HostPoolOptions {
  readonly name: string
  readonly role: HostInfo['role']
  readonly logger: Logger | undefined
  readonly onThrottled: (tenantId: string, limit: number, host: HostInfo) => void
  readonly onConnect?: ((client: pg.ClientBase) => Promise<void>) | undefined
  /** `database` mode: the server's connection budget this pool draws its connections from (ADR 0033). */
  readonly governor?: ConnectionGovernor | undefined
}

/**
 * One pg.Pool per Postgres host (per database on it), hardened for multi-tenant use, with its own
 * per-tenant caps: a tenant's reads on a replica do not use up its share of the primary. Governed (in
 * `database` mode), it opens a connection only with a permit of its server's budget and gives the
 * permit back once that connection has closed.
 */
export class HostPool {
  readonly pool: pg.Pool
  readonly info: HostInfo
  readonly limiter: TenantLimiter
  /** Calls holding or waiting for a connection here: the balancing signal across replicas. */
  outstanding = 0
  /**
   * Statements kept prepared per connection here; 0 (everything unnamed) once a transaction pooler in
   * front of this host showed it cannot keep them (stopNaming).
   */
  statementCacheSize: number
  readonly #logger: Logger | undefined
  readonly #settings: PoolSettings
  /** Connections lent out now, so a host found down (or a close that times out) can reach them. */
  readonly #leases = new Set<Lease>()
  /** Checks the leases' statement deadlines while any may be armed; cleared by end(). */
  #sweeper: NodeJS.Timeout | undefined
  /** Calls waiting for pg-pool to hand them a connection: each fails with the error it is given. */
  readonly #connecting = new Set<(error: Error) => void>()
  #ended = false
  /** Why the last attempt to open a connection here failed; cleared by the next that succeeds. */
  lastConnectError: string | undefined
  /** `database` mode: this pool's share of its server's connection budget. */
  readonly slots: GovernedSlots | undefined
  /**
   * A primary whose probe fails (routing/replica-monitor.ts): every lease is refused at once with
   * KEEL_DB_UNAVAILABLE (reason primary_down) instead of queueing for a connection that cannot come.
   */
  down: { readonly since: number; readonly reason: string } | undefined

  constructor(config: HostConfig, settings: PoolSettings, options: HostPoolOptions) {
    this.info = hostInfo(config, options.name, options.role)
    this.#logger = options.logger
    this.#settings = settings
    this.statementCacheSize = settings.statementCacheSize
    const check = options.onConnect
    const onConnect = async (client: pg.ClientBase) => {
      if (check !== undefined) await check(client)
      await detectDirect(client)
    }
    this.limiter = new TenantLimiter((tenantId, limit) => options.onThrottled(tenantId, limit, this.info))
    const poolConfig: pg.PoolConfig = {
      ...config,
      max: settings.max,
      idleTimeoutMillis: settings.idleTimeoutMs,
      connectionTimeoutMillis: settings.connectionTimeoutMs,
      application_name: settings.applicationName,
      keepAlive: settings.keepAlive,
      keepAliveInitialDelayMillis: settings.keepAliveInitialDelayMs,
      // queryTimeoutMs is not passed down: pg's query_timeout leaves the timed-out statement on the connection
      // and the connection in the pool. keel enforces it in sendBounded, closing that connection.
    }
    if (settings.maxUses > 0) poolConfig.maxUses = settings.maxUses
    poolConfig.onConnect = onConnect
    this.pool = new pg.Pool(poolConfig)
    this.slots =
      options.governor === undefined
        ? undefined
        : new GovernedSlots(options.governor, this.pool, settings.max, this.info)
    // Idle clients whose backend dies (pg_terminate_backend, a restart) emit here; pg-pool already
    // drops them. Without this listener the process would crash on an idle connection's error.
    this.pool.on('error', (error) => {
      this.#logger?.warn(
        { err: error, host: this.info.address, port: this.info.port },
        'keel: idle Postgres connection failed and was removed from the pool',
      )
    })
  }

  /**
   * Takes one of the tenant's permits on this host, then a connection; undoes the permit if the
   * connection fails. The lease gives both back.
   */
  async lease(
    tenantId: string,
    limit: number,
    acquireTimeoutMs: number,
    signal?: AbortSignal,
    statementTimeoutMs = 0,
  ): Promise<Lease> {
    if (signal?.aborted) throw abortError(signal)
    if (this.#ended) throw this.#closedError()
    if (this.down !== undefined) throw primaryDownError(this.info, this.down)
    this.outstanding++
    try {
      const permit = this.limiter.acquire(tenantId, limit, acquireTimeoutMs, signal)
      if (permit !== true) await permit
    } catch (error) {
      this.outstanding--
      throw error
    }
    let slot = false
    try {
      if (signal?.aborted) throw abortError(signal)
      if (this.slots !== undefined) {
        const taken = this.slots.take(acquireTimeoutMs, signal)
        if (taken !== true) await taken
        slot = true
      }
      const settings = this.#settings
      const timeoutMs = clientDeadlineMs(statementTimeoutMs, settings.timeoutGraceMs, settings.queryTimeoutMs)
      const lease: Lease = new Lease(
        await this.#connect(signal),
        this,
        timeoutMs,
        settings.timeoutGraceMs,
        () => {
          this.#leases.delete(lease)
          const next = this.limiter.release(tenantId)
          this.outstanding--
          if (slot) this.slots!.release(next)
        },
      )
      this.#leases.add(lease)
      return lease
    } catch (error) {
      const next = this.limiter.release(tenantId)
      this.outstanding--
      if (slot) this.slots!.release(next)
      // Gave up before taking a connection (aborted, budget timeout): a connection this tenant's last
      // release kept for this call must not stay idle while other databases wait for the budget.
      else this.slots?.handOn()
      throw error
    }
  }

  /**
   * Whether a call of this tenant would have to wait here: no permit of its own left, or no idle
   * connection and no room for another. A busy host is not a failed one; the router sends the read
   * elsewhere rather than queue it.
   */
  saturated(tenantId: string, limit: number): boolean {
    if (!this.limiter.hasRoom(tenantId, limit)) return true
    if (this.slots !== undefined) return this.slots.saturated()
    const pool = this.pool
    return pool.waitingCount > 0 || (pool.idleCount === 0 && pool.totalCount >= this.#settings.max)
  }

  /** Logs that a statement outlived its client-side deadline here: the host stopped answering. */
  reportUnresponsive(timeoutMs: number): void {
    this.#logger?.warn(
      {
        host: this.info.name,
        address: this.info.address,
        port: this.info.port,
        timeoutMs,
        signal: 'host_unresponsive',
      },
      'keel: Postgres host did not answer in time; connection closed on the client side',
    )
  }

  /**
   * Arms the client-side limit of the statement `lease` is about to send. One coarse sweep per host
   * replaces a timer per statement: the limits are seconds long (statementTimeoutMs + a grace), so
   * firing up to SWEEP_MS late costs nothing, while a setTimeout/clearTimeout pair on every statement
   * was measurable on the plain path.
   */
  armDeadline(lease: Lease, timeoutMs: number): void {
    lease.deadlineMs = timeoutMs
    lease.deadlineAt = performance.now() + timeoutMs
    if (this.#sweeper === undefined && !this.#ended) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.min(SWEEP_MS, timeoutMs))
      // A sweep must never keep the process alive.
      this.#sweeper.unref()
    }
  }

  #sweep(): void {
    const now = performance.now()
    for (const lease of this.#leases) {
      if (lease.deadlineAt === 0 || now < lease.deadlineAt) continue
      const timeoutMs = lease.deadlineMs
      lease.deadlineAt = 0
      this.reportUnresponsive(timeoutMs)
      lease.abandon(hostTimeoutError(lease, timeoutMs))
    }
  }

  /** The host was found down: statements in flight on it are given up on (a read moves elsewhere). */
  abandonInFlight(reason: string): void {
    if (this.#leases.size === 0) return
    const error = new KeelError(
      'KEEL_QUERY_TIMEOUT',
      `${this.info.name} (${this.info.address}:${this.info.port}) was found down while this statement ran (${reason}); keel closed the connection`,
      { details: { host: this.info.name, reason: 'host_down' } },
    )
    for (const lease of [...this.#leases]) lease.abandon(error)
  }

  /**
   * The primary was found down: new calls are refused from now on, and those already waiting for a
   * tenant permit or a connection here fail now with the same error (no pile-up behind a dead host).
   */
  markDown(down: { readonly since: number; readonly reason: string }): void {
    this.down = down
    const error = primaryDownError(this.info, down)
    for (const fail of [...this.#connecting]) fail(error)
    this.limiter.rejectAll(error)
    // database mode: calls queued for a permit of the server's budget (ADR 0033) fail too.
    this.slots?.failWaiters(error)
  }

  /** A pg-pool connection, or the caller's abort, whichever comes first; KEEL_CLOSED once ended. */
  #connect(signal: AbortSignal | undefined): Promise<pg.PoolClient> {
    if (this.#ended) return Promise.reject(this.#closedError())
    return new Promise<pg.PoolClient>((resolve, reject) => {
      let settled = false
      let unwatch: (() => void) | undefined
      const fail = (error: Error) => {
        if (settled) return
        settled = true
        this.#connecting.delete(fail)
        unwatch?.()
        reject(error)
      }
      this.#connecting.add(fail)
      if (signal !== undefined) unwatch = watchAbort(signal, () => fail(abortError(signal)))
      this.pool.connect().then(
        (client) => {
          // The caller stopped waiting (abort, close): the connection goes back, never to it.
          if (settled) return client.release(true)
          settled = true
          this.lastConnectError = undefined
          this.#connecting.delete(fail)
          unwatch?.()
          resolve(client)
        },
        (error: unknown) => {
          const failure = this.#connectError(error)
          if (failure.code !== 'KEEL_POOL_TIMEOUT' && failure.code !== 'KEEL_CLOSED')
            this.lastConnectError = failure.message
          fail(failure)
        },
      )
    })
  }

  #closedError(): KeelError {
    return new KeelError('KEEL_CLOSED', 'this keel instance is closed', {
      details: { host: this.info.name },
    })
  }

  #connectError(error: unknown): KeelError {
    if (error instanceof KeelError) return error
    const message = error instanceof Error ? error.message : String(error)
    if (this.#ended || message.includes('Cannot use a pool after calling end')) {
      const closed = this.#closedError()
      return new KeelError(closed.code, closed.message, { cause: error, details: closed.details })
    }
    if (message.includes('timeout exceeded when trying to connect')) {
      return new KeelError(
        'KEEL_POOL_TIMEOUT',
        `no connection to ${this.info.name} (${this.info.address}:${this.info.port}) became available in time`,
        {
          cause: error,
          details: { host: this.info.name, address: this.info.address, port: this.info.port },
        },
      )
    }
    return hostUnavailable(this.info, error)
  }

  /**
   * Stops preparing statements on this host after one was missing or already taken on a server
   * connection (26000/42P05): a transaction pooler (PgBouncer < 1.21, or without
   * max_prepared_statements) sits in front. Warns once; keel prints nothing without a logger.
   */
  stopNaming(cause: unknown): void {
    if (this.statementCacheSize === 0) return
    this.statementCacheSize = 0
    this.#logger?.warn(
      {
        err: cause,
        host: this.info.name,
        address: this.info.address,
        port: this.info.port,
        signal: 'statement_cache_disabled',
      },
      'keel: prepared statements do not survive on this host (a transaction pooler such as PgBouncer < 1.21 in front?); sending statements unnamed from now on. Set postgres.statementCacheSize: 0 to start that way.',
    )
  }

  /** Asks Postgres to cancel whatever the client's backend runs now (a CancelRequest on a new socket). */
  cancel(client: pg.PoolClient): void {
    const target = backendKeyOf(client)
    if (target.processID === undefined || target.secretKey === undefined) return
    const con = newCancelConnection()
    con.on('error', () => undefined)
    con.on('connect', () => {
      con.cancel(target.processID!, target.secretKey!)
    })
    // A stopped host accepts the socket and never answers: the cancel gets the grace period, and
    // its socket never keeps the process alive.
    con.stream.setTimeout(Math.max(1_000, this.#settings.timeoutGraceMs), () => con.stream.destroy())
    con.stream.unref()
    con.connect(target.port ?? this.info.port, target.host ?? this.info.address)
  }

  /**
   * Ends the pool once every lent connection is back. No new connection is handed out from now on
   * (KEEL_CLOSED). With `abandon`, keel stops waiting: calls queued here fail with it and connections
   * in use are cancelled and closed.
   */
  end(abandon?: KeelError): Promise<void> {
    this.#ended = true
    this.slots?.end(abandon)
    clearInterval(this.#sweeper)
    this.#sweeper = undefined
    if (abandon !== undefined) {
      for (const fail of [...this.#connecting]) fail(abandon)
      this.limiter.rejectAll(abandon)
      for (const lease of [...this.#leases]) lease.abandon(abandon)
    }
    return this.pool.end()
  }
}
