import type pg from 'pg'
import { LayeredCache } from './cache/layered-cache.js'
import { Engine } from './client/engine.js'
import type { KeelConfig, Logger, ResolvedConfig } from './config/config-schema.js'
import { parseConfig } from './config/parse-config.js'
import { KeelError } from './errors.js'
import type { ResolvedJobDefinition } from './jobs/job-definition.js'
import { JobRuntime } from './jobs/job-runtime.js'
import { pgPoolFactory } from './pg-pool/keel-pg-pool.js'
import { ClusterRegistry } from './placement/cluster-registry.js'
import { FixedPlacements, ResolvedPlacements } from './placement/placements.js'
import type { ConnectionGovernor } from './pool/connection-governor.js'
import { type HostInfo, hostInfo } from './pool/host-info.js'
import { loadParser } from './sql/sql-parser.js'
import { exportTables } from './stream/export-stream.js'
import { streamRows } from './stream/row-stream.js'
import { CacheTelemetry } from './telemetry/cache-telemetry.js'
import { JobTelemetry } from './telemetry/job-telemetry.js'
import { Telemetry } from './telemetry/telemetry.js'

const BYPASS_CHECK = 'SELECT rolsuper OR rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user'

/**
 * Fail closed: in rls mode (and for database mode's rls placements), a role that ignores policies would
 * serve every tenant's rows.
 */
function rlsRoleGuard(
  config: Readonly<ResolvedConfig>,
): ((client: pg.ClientBase) => Promise<void>) | undefined {
  const tenancy = config.tenancy
  if (tenancy.mode === 'schema' || tenancy.allowBypassRole) return undefined
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

/**
 * database mode: a call refused because its server's connection budget had nothing to spare. Counted
 * each time; logged at most once a second per server (a saturated server would flood the log).
 */
function budgetSignal(
  telemetry: Telemetry,
  logger: Logger | undefined,
): (governor: ConnectionGovernor) => void {
  const lastLogged = new Map<string, number>()
  return (governor) => {
    telemetry.budgetExhausted(governor.server)
    const now = Date.now()
    if (now - (lastLogged.get(governor.server) ?? 0) < 1_000) return
    lastLogged.set(governor.server, now)
    logger?.warn(
      { server: governor.server, ...governor.snapshot(), signal: 'connection_budget_exhausted' },
      'keel: no connection to spare within tenancy.maxConnections (KEEL_POOL_TIMEOUT)',
    )
  }
}

/** What createKeel hands the Keel it builds. */
export interface Wiring {
  readonly config: Readonly<ResolvedConfig>
  readonly engine: Engine
  /** Present when jobs are configured: the workers and close(); sessions see it as the engine's JobPort. */
  readonly jobs: JobRuntime | undefined
  /** Filled by keel.defineJob(); producers and workers read it. */
  readonly definitions: Map<string, ResolvedJobDefinition>
}

/**
 * Validates the config (throws KEEL_CONFIG_INVALID), then builds what a Keel runs on: the hosts, the
 * replica monitor, the cache, jobs, and the engine every session shares. Opens no connection yet.
 */
export function wireKeel(config: KeelConfig): Wiring {
  const resolved = parseConfig(config)
  // Every statement is checked with Postgres' parser (ADR 0022): start loading it now, so the first
  // statement rarely waits. A failure surfaces there, as KEEL_PARSER_UNAVAILABLE.
  loadParser().catch(() => undefined)
  const telemetry = new Telemetry(resolved.telemetry)
  const logger = resolved.logger
  const pg = resolved.postgres
  const onThrottled = (tenantId: string, limit: number, host: HostInfo) => {
    telemetry.tenantThrottled(tenantId)
    logger?.warn(
      { tenantId, limit, host: host.name, signal: 'tenant_throttled' },
      'keel: tenant throttled (KEEL_TENANT_BUSY)',
    )
  }
  const registry = new ClusterRegistry({
    settings: {
      ...pg.pool,
      applicationName: pg.applicationName,
      timeoutGraceMs: pg.timeoutGraceMs,
      statementCacheSize: pg.statementCacheSize,
    },
    logger,
    onThrottled,
    rlsGuard: rlsRoleGuard(resolved),
    maxConnections: resolved.tenancy.mode === 'database' ? resolved.tenancy.maxConnections : undefined,
    onBudgetExhausted: budgetSignal(telemetry, logger),
    monitor: {
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
      onPrimaryDown: (primary, reason) => {
        telemetry.primaryDown(primary)
        logger?.error(
          {
            host: primary.name,
            address: primary.address,
            port: primary.port,
            reason,
            signal: 'primary_down',
          },
          'keel: Postgres primary is down; writes and read-your-writes reads fail fast with KEEL_DB_UNAVAILABLE, other reads go to replicas',
        )
      },
      onPrimaryRestored: (primary, downForMs, cluster, timelineChanged) => {
        logger?.warn(
          {
            host: primary.name,
            address: primary.address,
            downForMs,
            timeline: cluster.timeline,
            timelineChanged,
            signal: 'primary_restored',
          },
          timelineChanged
            ? 'keel: Postgres primary answers again on a new timeline (a promoted replica); older consistency tokens now read the primary'
            : 'keel: Postgres primary answers again',
        )
      },
      onRestored: (state) => {
        logger?.info(
          { replica: state.host.info.name, lagMs: state.lagMs, signal: 'replica_restored' },
          'keel: replica back in read rotation',
        )
      },
    },
  })
  telemetry.observeReplicaLag(() =>
    registry.replicaStates().map((s) => ({ host: s.host.info, lagMs: s.lagMs })),
  )
  const placements =
    resolved.tenancy.mode === 'database'
      ? new ResolvedPlacements(registry, resolved.tenancy)
      : new FixedPlacements(registry, resolved)
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
  // The facade's pool options (ORMs read host, port, database off a pool): the configured primary's.
  const shown = pg.primary === undefined ? undefined : hostInfo(pg.primary, 'primary', 'primary')
  const engine = new Engine(
    resolved,
    placements,
    telemetry,
    cache,
    jobs,
    pgPoolFactory({
      max: resolved.postgres.pool.max,
      host: shown?.address ?? 'localhost',
      port: shown?.port ?? 5432,
      database: shown?.database ?? 'postgres',
    }),
    { stream: streamRows, export: exportTables },
  )
  return { config: resolved, engine, jobs, definitions }
}
