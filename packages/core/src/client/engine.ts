import type { Span } from '@opentelemetry/api'
import { LRUCache } from 'lru-cache'
import type pg from 'pg'
import { CacheClient, tenantScope } from '../cache/cache-client.js'
import type { LayeredCache } from '../cache/layered-cache.js'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import type { Placements } from '../placement/placements.js'
import { sendBounded } from '../pool/deadline.js'
import type { HostPool } from '../pool/host-pool.js'
import type { Lease } from '../pool/lease.js'
import { type PgQueryInternals, settledTransactionStatus } from '../pool/pg-internals.js'
import { ScopedQuery } from '../pool/scoped-query.js'
import { effectWith, type SessionEffect, statementClass } from '../sql/statement-class.js'
import type { Telemetry } from '../telemetry/telemetry.js'
import type { TenancyStrategy } from '../tenancy/tenancy-strategy.js'
import { InFlight } from './in-flight.js'
import type { JobPort } from './job-port.js'
import type { Consistency, QueryResult, WhenPrimaryDown } from './query-types.js'
import type { Readers } from './read-session.js'
import type { TenantClient } from './tenant-client.js'

/**
 * Builds a pg.Pool of the app's `pg` over keel, for one session or whichever `source` returns at each
 * call (pg-pool/, wired by createKeel: client/ does not import it).
 */
export type PgPoolFactory = (source: () => TenantClient) => pg.Pool

/** The limiter's name for keel's own maintenance statements: no tenant id can take it (ids are validated). */
const MAINTENANCE = '\u0000keel'

export interface TenantLimits {
  readonly connections: number
  readonly statementTimeoutMs: number
}

/**
 * The parts every tenant client shares, wired once by createKeel. The topology is not among them: each
 * tenant is served through its placement (ADR 0032), which `placements` gives.
 */
export class Engine {
  readonly config: Readonly<ResolvedConfig>
  readonly placements: Placements
  readonly telemetry: Telemetry
  readonly logger: Logger | undefined
  readonly acquireTimeoutMs: number
  readonly consistency: Consistency
  /** postgres.whenPrimaryDown: what a read-your-writes read does while the primary is down (ADR 0043). */
  readonly whenPrimaryDown: WhenPrimaryDown
  readonly cache: LayeredCache
  /** Present when jobs are configured: what sessions and transactions ask of them. */
  readonly jobs: JobPort | undefined
  /** db.pgPool() and keel.pgPool(): see PgPoolFactory. */
  readonly pgPool: PgPoolFactory
  /** db.stream() and db.export() (stream/, wired by createKeel). */
  readonly readers: Readers
  closed = false
  /** Calls accepted and not yet settled: keel.close() waits for them. */
  readonly inFlight = new InFlight()
  readonly #safeFunctions: ReadonlySet<string>
  readonly #limits = new LRUCache<string, TenantLimits>({ max: 10_000 })

  constructor(
    config: Readonly<ResolvedConfig>,
    placements: Placements,
    telemetry: Telemetry,
    cache: LayeredCache,
    jobs: JobPort | undefined,
    pgPool: PgPoolFactory,
    readers: Readers,
  ) {
    this.pgPool = pgPool
    this.readers = readers
    this.cache = cache
    this.jobs = jobs
    this.config = config
    this.placements = placements
    this.telemetry = telemetry
    this.logger = config.logger
    this.acquireTimeoutMs = config.limits.acquireTimeoutMs
    this.consistency = config.postgres.consistency
    this.whenPrimaryDown = config.postgres.whenPrimaryDown
    this.#safeFunctions = new Set(config.postgres.safeFunctions)
  }

  jobPort(): JobPort {
    this.assertOpen()
    if (this.jobs === undefined) {
      throw new KeelError('KEEL_JOBS_NOT_CONFIGURED', 'jobs need createKeel({ jobs: { redis: { url } } })')
    }
    return this.jobs
  }

  cacheFor(tenantId: string): CacheClient {
    return new CacheClient(this.cache, tenantScope(tenantId), tenantId, () => this.assertOpen())
  }

  /**
   * Per-tenant connections and waiters on each host, for health output and tests: by host name, or in
   * database mode by `name@address:port/database` (every tenant database has a 'primary').
   */
  tenantSnapshot(): Record<string, Record<string, { active: number; waiting: number }>> {
    const out: Record<string, Record<string, { active: number; waiting: number }>> = {}
    const qualified = this.placements.fixed === undefined
    for (const cluster of this.placements.registry.clusters()) {
      for (const host of cluster.hosts()) {
        out[qualified ? `${host.info.name}@${cluster.key}` : host.info.name] = host.limiter.snapshot()
      }
    }
    return out
  }

  /**
   * A statement that belongs to no tenant (the outbox sweep's list of tenants), run on each primary
   * keel serves, through its pool and budget like any call, under a name of no tenant.
   */
  async queryPrimaries<T>(text: string, values: readonly unknown[]): Promise<T[]> {
    const rows: T[] = []
    for (const cluster of this.placements.registry.clusters()) {
      const lease = await cluster.primary.lease(MAINTENANCE, 1, this.acquireTimeoutMs)
      try {
        const result = await lease.client.query<T & pg.QueryResultRow>(text, values as unknown[])
        rows.push(...result.rows)
      } finally {
        lease.release()
      }
    }
    return rows
  }

  assertOpen(): void {
    if (this.closed) throw new KeelError('KEEL_CLOSED', 'this keel instance is closed')
  }

  limitsFor(tenantId: string): TenantLimits {
    let limits = this.#limits.get(tenantId)
    if (limits === undefined) {
      const base = this.config.limits
      const override = base.forTenant?.(tenantId) ?? {}
      const poolMax = this.config.postgres.pool.max
      const share = override.tenantConnections ?? base.tenantConnections
      const connections =
        share < 1 ? Math.max(1, Math.floor(share * poolMax)) : Math.min(poolMax, Math.floor(share))
      limits = { connections, statementTimeoutMs: override.statementTimeoutMs ?? base.statementTimeoutMs }
      this.#limits.set(tenantId, limits)
    }
    return limits
  }

  /**
   * Refuses a statement that is not SQL text or would leave session state (KEEL_QUERY_INVALID), and
   * says what the one it accepts may leave on its connection, for this instance (postgres.safeFunctions).
   * One classification per statement: parsed by Postgres' own grammar (ADR 0022; a regex over SQL was
   * bypassed by a leading comment). Callers load the parser first (loadParser()).
   */
  checkStatement(text: unknown): SessionEffect {
    if (typeof text !== 'string' || !/\S/.test(text)) {
      throw new KeelError('KEEL_QUERY_INVALID', 'query text must be a non-empty string')
    }
    const found = statementClass(text)
    if (found.refusal !== undefined) throw new KeelError('KEEL_QUERY_INVALID', found.refusal)
    return effectWith(found, this.#safeFunctions)
  }

  /**
   * Sends a query on a leased connection. An abort cancels it server-side and retires the connection;
   * the call settles on the client side even when the host never answers (see sendBounded).
   */
  submit<R>(lease: Lease, query: PgQueryInternals, signal: AbortSignal | undefined): Promise<QueryResult<R>> {
    return sendBounded<QueryResult<R>>(lease, query, signal)
  }

  /**
   * keel.close(): waits up to closeTimeoutMs for the calls already accepted, then cancels what is
   * left with KEEL_CLOSED; either way the pools end and anything that still reaches one gets KEEL_CLOSED.
   */
  async drainAndEnd(): Promise<void> {
    const drained = await this.inFlight.settled(this.config.postgres.closeTimeoutMs)
    const abandon = drained
      ? undefined
      : new KeelError(
          'KEEL_CLOSED',
          `keel.close() waited ${this.config.postgres.closeTimeoutMs} ms (postgres.closeTimeoutMs) for this call, then cancelled it`,
        )
    await this.placements.registry.end(abandon)
  }

  /** Maps an error raised by a scope prelude; a missing prepared prelude means the connection was reset. */
  translate(
    tenantId: string,
    error: unknown,
    query: ScopedQuery | undefined,
    lease: Lease | undefined,
    scope: TenancyStrategy,
  ): unknown {
    if (query === undefined || query.failedPrelude < 0) return error
    if ((error as { code?: string } | null)?.code === '26000') lease?.markBroken()
    return scope.scopeError(tenantId, error) ?? error
  }

  /**
   * Rolls back what a failed batch opened (BEGIN ran before the statement that failed), so the batch can
   * be sent again; if that fails too (the connection is gone), retires the connection and throws that
   * failure. Always sent, never decided from getTransactionStatus(): pg rejects a query at the
   * ErrorResponse, before the ReadyForQuery that updates that status, and through a pooler the two
   * often arrive apart.
   */
  async rollBack(lease: Lease): Promise<void> {
    try {
      await this.submit(lease, new ScopedQuery('ROLLBACK', undefined, [], 0), undefined)
    } catch (error) {
      lease.markBroken()
      throw error
    }
  }

  /**
   * After a failed batch that opened a transaction (BEGIN ... COMMIT around a write), before the caller
   * sees the error: the connection is rolled back, or retired if even that fails.
   */
  async settle(lease: Lease): Promise<void> {
    // Undefined while the batch's ReadyForQuery is still due: the ROLLBACK then queues behind it (a
    // harmless warning if the transaction had ended after all).
    if (settledTransactionStatus(lease.client) === 'I') return
    await this.rollBack(lease).catch(() => undefined)
  }

  endSpan(span: Span, started: number, operation: string, host: HostPool, error: unknown): void {
    this.telemetry.endSpan(span, error)
    this.telemetry.recordDuration((performance.now() - started) / 1_000, operation, host.info, error)
  }
}
