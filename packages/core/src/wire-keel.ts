import type pg from 'pg'
import { LayeredCache } from './cache/layered-cache.js'
import { Engine } from './client/engine.js'
import type { KeelConfig, ResolvedConfig } from './config/config-schema.js'
import { parseConfig } from './config/parse-config.js'
import { KeelError } from './errors.js'
import type { ResolvedJobDefinition } from './jobs/job-definition.js'
import { JobRuntime } from './jobs/job-runtime.js'
import { pgPoolFactory } from './pg-pool/keel-pg-pool.js'
import type { HostInfo } from './pool/host-info.js'
import { HostPool } from './pool/host-pool.js'
import { ReplicaMonitor } from './routing/replica-monitor.js'
import { loadParser } from './sql/sql-parser.js'
import { CacheTelemetry } from './telemetry/cache-telemetry.js'
import { JobTelemetry } from './telemetry/job-telemetry.js'
import { Telemetry } from './telemetry/telemetry.js'
import { RlsStrategy } from './tenancy/rls-strategy.js'
import { SchemaStrategy } from './tenancy/schema-strategy.js'
import type { TenancyStrategy } from './tenancy/tenancy-strategy.js'

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
    pgPoolFactory({
      max: resolved.postgres.pool.max,
      host: primary.info.address,
      port: primary.info.port,
      database: primary.info.database,
    }),
  )
  return { config: resolved, engine, jobs, definitions }
}
