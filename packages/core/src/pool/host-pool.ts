import pg from 'pg'
import type { Logger } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import { abortError, TenantLimiter } from './tenant-limiter.js'

export interface HostConfig {
  connectionString?: string | undefined
  host?: string | undefined
  port?: number | undefined
  user?: string | undefined
  password?: string | undefined
  database?: string | undefined
  ssl?: boolean | Record<string, unknown> | undefined
}

export interface PoolSettings {
  /** Statements kept prepared per connection (postgres.statementCacheSize). */
  statementCacheSize: number
  max: number
  idleTimeoutMs: number
  connectionTimeoutMs: number
  maxUses: number
  applicationName: string
}

/** Where a host is, for spans and health output: never the user or password. */
export interface HostInfo {
  readonly name: string
  readonly role: 'primary' | 'replica'
  readonly address: string
  readonly port: number
  readonly database: string
}

export function hostInfo(config: HostConfig, name: string, role: HostInfo['role']): HostInfo {
  let address = config.host ?? 'localhost'
  let port = config.port ?? 5432
  let database = config.database
  if (config.connectionString !== undefined) {
    const url = new URL(config.connectionString)
    if (config.host === undefined && url.hostname !== '') address = url.hostname
    if (config.port === undefined && url.port !== '') port = Number(url.port)
    if (database === undefined && url.pathname.length > 1)
      database = decodeURIComponent(url.pathname.slice(1))
  }
  return { name, role, address, port, database: database ?? config.user ?? 'postgres' }
}

// One 'error' listener per client for its whole life (not one added and removed per checkout): a
// checked-out client that loses its socket emits 'error', and without a listener Node would crash.
// The failing query is rejected by pg itself; the listener only records that the client is done for.
const watched = new WeakSet<pg.PoolClient>()
const failed = new WeakSet<pg.PoolClient>()

// Connections whose server process is the one Postgres reported at startup: nothing pools between.
const direct = new WeakSet<pg.ClientBase>()

/**
 * Marks a new connection direct when the backend key it got at startup is its server process's pid. A
 * pooler (PgBouncer) makes up its own key per client and moves the client between server processes,
 * so the pids differ. One query per new connection.
 */
async function detectDirect(client: pg.ClientBase): Promise<void> {
  const result = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  if (result.rows[0]?.pid === (client as unknown as { processID?: number }).processID) direct.add(client)
}

function watch(client: pg.PoolClient): void {
  if (watched.has(client)) return
  watched.add(client)
  client.on('error', () => failed.add(client))
}

/** A connection lent to one call; released exactly once, destroyed unless provably clean. */
export class Lease {
  readonly client: pg.PoolClient
  readonly host: HostPool
  #broken = false
  #released = false
  readonly #done: () => void

  constructor(client: pg.PoolClient, host: HostPool, done: () => void) {
    this.client = client
    this.host = host
    this.#done = done
    watch(client)
  }

  /**
   * True when this connection reaches Postgres itself: the statements it prepared stay on its server
   * process. False behind a pooler (or unknown): inside a transaction keel then names nothing it cannot
   * retry, as a missing name there would abort the caller's transaction.
   */
  get direct(): boolean {
    return direct.has(this.client)
  }

  markBroken(): void {
    this.#broken = true
  }

  release(): void {
    if (this.#released) return
    this.#released = true
    // A client released inside an open or failed transaction still carries that transaction's
    // settings (the previous tenant's): pg-pool does not check, so keel destroys it instead.
    const clean = !this.#broken && !failed.has(this.client) && this.client.getTransactionStatus() === 'I'
    this.client.release(clean ? undefined : true)
    // The connection goes back first so the tenant's next waiter finds it free in the pool.
    this.#done()
  }
}

export interface HostPoolOptions {
  readonly name: string
  readonly role: HostInfo['role']
  readonly logger: Logger | undefined
  readonly onThrottled: (tenantId: string, limit: number, host: HostInfo) => void
  readonly onConnect?: ((client: pg.ClientBase) => Promise<void>) | undefined
}

/**
 * One pg.Pool per Postgres host, hardened for multi-tenant use, with its own per-tenant caps: a
 * tenant's reads on a replica do not use up its share of the primary.
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

  constructor(config: HostConfig, settings: PoolSettings, options: HostPoolOptions) {
    this.info = hostInfo(config, options.name, options.role)
    this.#logger = options.logger
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
    }
    if (settings.maxUses > 0) poolConfig.maxUses = settings.maxUses
    poolConfig.onConnect = onConnect
    this.pool = new pg.Pool(poolConfig)
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
  ): Promise<Lease> {
    if (signal?.aborted) throw abortError(signal)
    this.outstanding++
    try {
      const permit = this.limiter.acquire(tenantId, limit, acquireTimeoutMs, signal)
      if (permit !== true) await permit
    } catch (error) {
      this.outstanding--
      throw error
    }
    try {
      if (signal?.aborted) throw abortError(signal)
      return new Lease(await this.#connect(), this, () => {
        this.limiter.release(tenantId)
        this.outstanding--
      })
    } catch (error) {
      this.limiter.release(tenantId)
      this.outstanding--
      throw error
    }
  }

  async #connect(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect()
    } catch (error) {
      if (error instanceof KeelError) throw error
      const message = error instanceof Error ? error.message : String(error)
      if (message.includes('timeout exceeded when trying to connect')) {
        throw new KeelError(
          'KEEL_POOL_TIMEOUT',
          `no connection to ${this.info.name} (${this.info.address}:${this.info.port}) became available in time`,
          {
            cause: error,
            details: { host: this.info.name, address: this.info.address, port: this.info.port },
          },
        )
      }
      throw error
    }
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
    const target = client as unknown as {
      processID?: number
      secretKey?: number
      host?: string
      port?: number
    }
    if (target.processID === undefined || target.secretKey === undefined) return
    const con = new (pg as unknown as { Connection: new () => PgCancelConnection }).Connection()
    con.on('error', () => undefined)
    con.on('connect', () => {
      con.cancel(target.processID!, target.secretKey!)
    })
    con.connect(target.port ?? this.info.port, target.host ?? this.info.address)
  }

  end(): Promise<void> {
    return this.pool.end()
  }
}

interface PgCancelConnection {
  on(event: string, listener: (...args: unknown[]) => void): void
  connect(port: number, host: string): void
  cancel(processID: number, secretKey: number): void
  end(): void
}
