import type pg from 'pg'
import { type CacheApi, CacheClient, SHARED_SCOPE } from './cache/cache-client.js'
import { LayeredCache } from './cache/layered-cache.js'
import { Engine } from './client/engine.js'
import { type CurrentEntry, TenantClient } from './client/tenant-client.js'
import type { KeelConfig, ResolvedConfig } from './config/config-schema.js'
import { parseConfig } from './config/parse-config.js'
import { TenantContext } from './context/tenant-context.js'
import { KeelError } from './errors.js'
import { type JobDefinition, type ResolvedJobDefinition, resolveDefinition } from './jobs/job-definition.js'
import { JobRuntime, type StartWorkerOptions } from './jobs/job-runtime.js'
import type { JobWorker } from './jobs/job-worker.js'
import type { HostInfo } from './pool/host-info.js'
import { HostPool } from './pool/host-pool.js'
import { formatLsn } from './routing/lsn.js'
import { ReplicaMonitor } from './routing/replica-monitor.js'
import { SessionPosition } from './routing/session-position.js'
import { loadParser } from './sql/sql-parser.js'
import { CacheTelemetry } from './telemetry/cache-telemetry.js'
import { JobTelemetry } from './telemetry/job-telemetry.js'
import { Telemetry } from './telemetry/telemetry.js'
import { RlsStrategy } from './tenancy/rls-strategy.js'
import { SchemaStrategy } from './tenancy/schema-strategy.js'
import type { TenancyStrategy } from './tenancy/tenancy-strategy.js'
import { validateTenantId } from './tenancy/validate-tenant-id.js'

export interface HostHealth {
  name: string
  status: 'up' | 'down'
  role: 'primary' | 'replica'
  address: string
  port: number
  latencyMs?: number
  error?: string
  pool: { total: number; idle: number; waiting: number }
}

export interface ReplicaHealth extends HostHealth {
  role: 'replica'
  /** Reads may go here: up, a replica of this cluster, and within maxReplicaLagMs. */
  inRotation: boolean
  /** How far behind the primary it replays, as of the last poll. */
  lagMs: number | null
  replayLsn: string | null
}

export interface Health {
  /** 'up' while the primary answers: replicas only add capacity. */
  status: 'up' | 'down'
  primary: HostHealth
  replicas: ReplicaHealth[]
  /** Per host name, per tenant: connections held and calls waiting. */
  tenants: Record<string, Record<string, { active: number; waiting: number }>>
  /**
   * The cache's shared tier: 'down' when it does not answer a PING within the command timeout, or while
   * its circuit breaker is open (calls still succeed via L1).
   */
  cache: { redis: 'up' | 'down' | 'not configured' }
}

export interface TenantOptions {
  /** A `db.consistencyToken` from an earlier request or the job's producer. Garbage is never an error. */
  consistencyToken?: string | undefined
}

/** The SDK instance: build one per process with createKeel() and share it. */
export class Keel {
  readonly config: Readonly<ResolvedConfig>
  /** The cache for data shared by all tenants (same API as db.cached / db.invalidate). */
  readonly cache: CacheApi
  readonly #engine: Engine
  readonly #definitions: Map<string, ResolvedJobDefinition>
  readonly #context = new TenantContext<CurrentEntry>()
  #closing: Promise<void> | undefined

  constructor(
    config: Readonly<ResolvedConfig>,
    engine: Engine,
    definitions: Map<string, ResolvedJobDefinition>,
  ) {
    this.config = config
    this.#engine = engine
    this.#definitions = definitions
    this.cache = new CacheClient(engine.cache, SHARED_SCOPE, undefined, () => engine.assertOpen())
  }

  /**
   * A client scoped to one tenant, and a read-your-writes session. Cheap: create one per request; pass
   * the previous request's `consistencyToken` to keep reading your writes across requests.
   */
  tenant(id: string, options?: TenantOptions): TenantClient {
    this.#engine.assertOpen()
    return this.#session(id, options?.consistencyToken, false)
  }

  #session(id: string, token: unknown, acceptedWork: boolean): TenantClient {
    const tenantId = validateTenantId(
      id,
      this.config.tenants.idPattern,
      this.config.tenancy.mode === 'schema',
    )
    this.#engine.strategy.validate?.(tenantId)
    // A token that is not even a string is garbage like any other: the session reads the primary.
    const position =
      typeof token === 'string' || token === undefined
        ? SessionPosition.fromToken(token)
        : SessionPosition.untrusted()
    return new TenantClient(this.#engine, tenantId, position, this.#context, acceptedWork)
  }

  /** Runs `fn` with `db` as the current tenant client, reachable from deep code via current(). */
  run<R>(db: TenantClient, fn: () => R): R {
    if (!(db instanceof TenantClient)) {
      throw new KeelError('KEEL_INVALID_TENANT', 'keel.run() needs a client from keel.tenant(id)')
    }
    return this.#context.run({ client: db }, fn)
  }

  /**
   * Defines a job: its zod schema (checked at enqueue and before each attempt), handler, retries,
   * backoff and per-attempt timeout. Define every job in producers and workers alike.
   */
  defineJob<P, R>(name: string, definition: JobDefinition<P, R>): void {
    this.#engine.assertOpen()
    const resolved = resolveDefinition(name, definition)
    if (this.#definitions.has(name)) {
      throw new KeelError('KEEL_JOB_INVALID', `job ${JSON.stringify(name)} is already defined`, {
        details: { name },
      })
    }
    this.#definitions.set(name, resolved)
  }

  /**
   * Starts workers for defined jobs: a BullMQ worker per job name, each on its job's own queue, so it is
   * handed only jobs it runs (ADR 0025). Each job runs as its tenant (a db resuming the producer's
   * consistency token, inside keel.run) and continues the producer's trace. keel.close() stops it.
   */
  startWorker(options?: StartWorkerOptions): JobWorker {
    const runtime = this.#engine.jobRuntime()
    return runtime.startWorker(
      {
        runAs: (tenantId, consistencyToken, fn) => {
          // A job already running is accepted work: its session may use the pools while close()
          // drains (workers close first and wait for their running jobs).
          const db = this.#session(tenantId, consistencyToken, true)
          return this.run(db, () => fn(db))
        },
        primaryPool: this.#engine.primary.pool,
      },
      options,
    )
  }

  /**
   * The tenant client of the surrounding keel.run(); throws KEEL_NO_TENANT_CONTEXT outside one. Inside
   * `db.transaction(fn)` it is that `db`, and a session inside its own transaction's callback acts on
   * the transaction: query() runs in it, transaction() makes a savepoint, enqueue() uses the outbox.
   */
  current(): TenantClient {
    return this.#context.current().client
  }

  /** Like current(), but undefined outside keel.run(). */
  maybeCurrent(): TenantClient | undefined {
    return this.#context.maybeCurrent()?.client
  }

  /** The primary (a live round trip), each replica (from the monitor: lag, rotation) and tenant usage. */
  async health(): Promise<Health> {
    const engine = this.#engine
    const redisUp = this.config.cache.redis === undefined ? undefined : engine.cache.redisHealthy()
    const primary = await probeHost(engine.primary, engine.closed)
    const replicas = (engine.monitor?.replicas ?? []).map((state): ReplicaHealth => {
      const base = hostBase(state.host)
      return {
        ...base,
        role: 'replica',
        status: state.up && !engine.closed ? 'up' : 'down',
        inRotation: state.inRotation && !engine.closed,
        lagMs: state.lagMs === undefined || !Number.isFinite(state.lagMs) ? null : Math.round(state.lagMs),
        replayLsn: state.replayLsn === undefined ? null : formatLsn(state.replayLsn),
        ...(state.lastError === undefined ? {} : { error: state.lastError }),
      }
    })
    const redis = redisUp === undefined ? 'not configured' : (await redisUp) ? 'up' : 'down'
    return { status: primary.status, primary, replicas, tenants: engine.tenantSnapshot(), cache: { redis } }
  }

  /**
   * Refuses new calls at once (KEEL_CLOSED), lets every call it accepted finish (running, queued for a
   * connection, transactions in progress; up to postgres.closeTimeoutMs, then they are cancelled),
   * then closes the pools.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      const engine = this.#engine
      engine.closed = true
      this.#closing = (async () => {
        // Workers first: their running jobs still need the pools.
        await engine.jobs?.close()
        await Promise.all([engine.drainAndEnd(), engine.cache.close()])
      })()
    }
    return this.#closing
  }
}

function hostBase(host: HostPool) {
  const pool = host.pool
  return {
    name: host.info.name,
    address: host.info.address,
    port: host.info.port,
    pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount },
  }
}

// pg's per-query query_timeout (not in @types/pg's QueryConfig); the pool drops a client that hit it.
const HEALTH_PROBE = { text: 'SELECT 1', query_timeout: 2_000 }

async function probeHost(host: HostPool, closed: boolean): Promise<HostHealth> {
  const started = performance.now()
  const base = { ...hostBase(host), role: host.info.role }
  try {
    if (closed) throw new KeelError('KEEL_CLOSED', 'this keel instance is closed')
    // Bounded: a stopped host would keep readiness waiting forever on an idle connection.
    await host.pool.query({ ...HEALTH_PROBE })
    return { ...base, status: 'up', latencyMs: Math.round((performance.now() - started) * 100) / 100 }
  } catch (error) {
    return { ...base, status: 'down', error: error instanceof Error ? error.message : String(error) }
  }
}
function strategyFor(config: Readonly<ResolvedConfig>): TenancyStrategy {
  const tenancy = config.tenancy
  switch (tenancy.mode) {
    case 'rls':
      return new RlsStrategy(tenancy.setting)
    case 'schema':
      return new SchemaStrategy(tenancy.schemaFor, tenancy.sharedSchemas)
    default:
      // The schema refuses 'database' until its issue lands; this is the seam it plugs into.
      throw new KeelError(
        'KEEL_CONFIG_INVALID',
        `tenancy.mode ${JSON.stringify((tenancy as { mode: string }).mode)} is not available`,
      )
  }
}

const BYPASS_CHECK = 'SELECT rolsuper OR rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user'

/** Fail closed: in rls mode, a role that ignores policies would serve every tenant's rows. */
function rlsRoleGuard(
  config: Readonly<ResolvedConfig>,
): ((client: pg.ClientBase) => Promise<void>) | undefined {
  if (config.tenancy.mode !== 'rls' || config.tenancy.allowBypassRole) return undefined
  return async (client) => {
    const result = await client.query<{ bypass: boolean }>(BYPASS_CHECK)
    if (result.rows[0]?.bypass !== false) {
      throw new KeelError(
        'KEEL_RLS_BYPASS',
        'the runtime role is a superuser or has BYPASSRLS, so row-level security would not apply; connect as a plain role (or set tenancy.allowBypassRole for a deliberate admin pool)',
      )
    }
  }
}

/** Validates the config (throws KEEL_CONFIG_INVALID), then wires keel. Opens no connection yet. */
export function createKeel(config: KeelConfig): Keel {
  const resolved = parseConfig(config)
  // Every statement is checked with Postgres' parser (ADR 0022): start loading it now, so the first
  // statement rarely waits. A failure surfaces there, as KEEL_PARSER_UNAVAILABLE.
  loadParser().catch(() => undefined)
  const strategy = strategyFor(resolved)
  const telemetry = new Telemetry(resolved.telemetry)
  const logger = resolved.logger
  const pg = resolved.postgres
  const settings = {
    ...pg.pool,
    applicationName: pg.applicationName,
    timeoutGraceMs: pg.timeoutGraceMs,
    statementCacheSize: pg.statementCacheSize,
  }
  const onThrottled = (tenantId: string, limit: number, host: HostInfo) => {
    telemetry.tenantThrottled(tenantId)
    logger?.warn(
      { tenantId, limit, host: host.name, signal: 'tenant_throttled' },
      'keel: tenant throttled (KEEL_TENANT_BUSY)',
    )
  }
  const onConnect = rlsRoleGuard(resolved)
  const primary = new HostPool(pg.primary, settings, {
    name: 'primary',
    role: 'primary',
    logger,
    onThrottled,
    onConnect,
  })
  const replicaConfigs = pg.replicas.map(({ name, ...hostConfig }, i) => ({
    config: hostConfig,
    host: new HostPool(hostConfig, settings, {
      name: name ?? `replica${i + 1}`,
      role: 'replica',
      logger,
      onThrottled,
      onConnect,
    }),
  }))
  let monitor: ReplicaMonitor | undefined
  if (replicaConfigs.length > 0) {
    monitor = new ReplicaMonitor({ config: pg.primary }, replicaConfigs, {
      pollMs: pg.replicaPollMs,
      maxLagMs: pg.maxReplicaLagMs,
      connectionTimeoutMs: pg.pool.connectionTimeoutMs,
      applicationName: pg.applicationName,
      logger,
      onEjected: (state, reason) => {
        telemetry.replicaEjected(state.host.info)
        logger?.warn(
          {
            replica: state.host.info.name,
            address: state.host.info.address,
            reason,
            signal: 'replica_ejected',
          },
          'keel: replica taken out of read rotation',
        )
      },
      onRestored: (state) => {
        logger?.info(
          { replica: state.host.info.name, lagMs: state.lagMs, signal: 'replica_restored' },
          'keel: replica back in read rotation',
        )
      },
    })
    const states = monitor.replicas
    telemetry.observeReplicaLag(() => states.map((s) => ({ host: s.host.info, lagMs: s.lagMs })))
    void monitor.start()
  }
  const cache = new LayeredCache(
    resolved.cache,
    new CacheTelemetry(telemetry.tracer, telemetry.meter),
    logger,
  )
  const definitions = new Map<string, ResolvedJobDefinition>()
  const jobs =
    resolved.jobs === undefined
      ? undefined
      : new JobRuntime(
          resolved.jobs,
          definitions,
          new JobTelemetry(telemetry.tracer, telemetry.meter, resolved.jobs.queue),
          logger,
        )
  const engine = new Engine(
    resolved,
    strategy,
    { primary, replicas: replicaConfigs.map((r) => r.host), monitor },
    telemetry,
    cache,
    jobs,
  )
  return new Keel(resolved, engine, definitions)
}
