import type pg from 'pg'
import { Engine } from './client/engine.js'
import { TenantClient } from './client/tenant-client.js'
import type { KeelConfig, ResolvedConfig } from './config/config-schema.js'
import { parseConfig } from './config/parse-config.js'
import { TenantContext } from './context/tenant-context.js'
import { KeelError } from './errors.js'
import { HostPool } from './pool/host-pool.js'
import { Telemetry } from './telemetry/telemetry.js'
import { RlsStrategy } from './tenancy/rls-strategy.js'
import { SchemaStrategy } from './tenancy/schema-strategy.js'
import type { TenancyStrategy } from './tenancy/tenancy-strategy.js'
import { validateTenantId } from './tenancy/validate-tenant-id.js'

export interface HostHealth {
  status: 'up' | 'down'
  role: 'primary'
  address: string
  port: number
  latencyMs?: number
  error?: string
  pool: { total: number; idle: number; waiting: number }
}

export interface Health {
  status: 'up' | 'down'
  primary: HostHealth
  tenants: Record<string, { active: number; waiting: number }>
}

/** The SDK instance: build one per process with createKeel() and share it. */
export class Keel {
  readonly config: Readonly<ResolvedConfig>
  readonly #engine: Engine
  readonly #context = new TenantContext<TenantClient>()
  #closing: Promise<void> | undefined

  constructor(config: Readonly<ResolvedConfig>, engine: Engine) {
    this.config = config
    this.#engine = engine
  }

  /** A client scoped to one tenant. Cheap: create one per request. */
  tenant(id: string): TenantClient {
    this.#engine.assertOpen()
    return new TenantClient(this.#engine, validateTenantId(id, this.config.tenants.idPattern))
  }

  /** Runs `fn` with `db` as the current tenant client, reachable from deep code via current(). */
  run<R>(db: TenantClient, fn: () => R): R {
    if (!(db instanceof TenantClient)) {
      throw new KeelError('KEEL_INVALID_TENANT', 'keel.run() needs a client from keel.tenant(id)')
    }
    return this.#context.run(db, fn)
  }

  /** The tenant client of the surrounding keel.run(); throws KEEL_NO_TENANT_CONTEXT outside one. */
  current(): TenantClient {
    return this.#context.current()
  }

  /** Like current(), but undefined outside keel.run(). */
  maybeCurrent(): TenantClient | undefined {
    return this.#context.maybeCurrent()
  }

  async health(): Promise<Health> {
    const pool = this.#engine.primary
    const started = performance.now()
    const stats = { total: pool.pool.totalCount, idle: pool.pool.idleCount, waiting: pool.pool.waitingCount }
    const base = { role: 'primary' as const, address: pool.info.address, port: pool.info.port, pool: stats }
    let primary: HostHealth
    try {
      this.#engine.assertOpen()
      await pool.pool.query('SELECT 1')
      primary = { ...base, status: 'up', latencyMs: Math.round((performance.now() - started) * 100) / 100 }
    } catch (error) {
      primary = { ...base, status: 'down', error: error instanceof Error ? error.message : String(error) }
    }
    return { status: primary.status, primary, tenants: this.#engine.limiter.snapshot() }
  }

  /** Stops taking work, waits for calls in flight to give their connections back, closes the pools. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#engine.closed = true
      this.#closing = this.#engine.primary.end()
    }
    return this.#closing
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
  const strategy = strategyFor(resolved)
  const telemetry = new Telemetry(resolved.telemetry)
  const primary = new HostPool(
    resolved.postgres.primary,
    { ...resolved.postgres.pool, applicationName: resolved.postgres.applicationName },
    resolved.logger,
    rlsRoleGuard(resolved),
  )
  return new Keel(resolved, new Engine(resolved, strategy, primary, telemetry))
}
