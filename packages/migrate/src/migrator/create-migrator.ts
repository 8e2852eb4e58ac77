// One piece (~480 lines): the migrator's run over the fleet (up: the shared scope, then every tenant,
// canary, failures) and its report (status) read the same scopes, ledger and migration files; the
// per-scope runner (scope-runner.ts), lock retries (lock-retry.ts) and a tenant scope's creation and
// retirement (tenant-lifecycle.ts) live apart.
import pg from 'pg'
import { z } from 'zod'
import {
  type MigrateEvent,
  type MigratorOptions,
  migratorOptionsSchema,
  type ResolvedMigratorOptions,
} from '../config/migrator-options.js'
import { MigrateError } from '../errors.js'
import { ensureLedger, readLedger } from './ledger.js'
import { type Migration, readMigrations } from './migration-files.js'
import { runFleet } from './run-fleet.js'
import { type AppliedMigration, runScope } from './scope-runner.js'
import { quoteIdent, type ScopeOptions, type ScopeTarget } from './scope-session.js'
import { createTenantScope, type ProvisionOptions, retireTenantScope } from './tenant-lifecycle.js'
import {
  checkTenantId,
  connectClient,
  ledgerScope,
  placeTenant,
  type TenantPlacement,
} from './tenant-scopes.js'

export interface FailedScope {
  /** The tenant, or null for the shared migrations. */
  tenant: string | null
  /** The migration that failed, or null when the scope failed before one ran (connection, lock, unknown tenant). */
  migration: string | null
  error: Error
}

export interface UpResult {
  applied: AppliedMigration[]
  /** One entry per scope that failed; the others finished. Empty when everything is migrated. */
  failed: FailedScope[]
  /** Tenants not attempted: the shared migrations failed, or a canary tenant did. */
  skipped: string[]
  /** INVALID indexes found (a killed concurrent build) and rebuilt or dropped. */
  rebuiltIndexes: string[]
  /** Tenants in the run. */
  tenants: number
  durationMs: number
}

export interface ScopeStatus {
  tenant: string | null
  /** 'ok' (up to date), 'pending', 'failed' (its last run failed), 'missing' (schema/database absent), 'error' (unreachable). */
  state: 'ok' | 'pending' | 'failed' | 'missing' | 'error'
  applied: number
  pending: string[]
  /** Applied migrations whose file changed since (checksum mismatch). */
  drift: string[]
  /** Applied migrations with no file any more. */
  unknown: string[]
  /** A non-transactional migration stopped part-way (resumes on the next up()). */
  inProgress: string[]
  failure: { migration: string | null; error: string; at: Date } | null
}

export interface UpOptions {
  /** Only these tenants (the shared migrations still run first). */
  tenants?: readonly string[]
}

export interface Migrator {
  up(options?: UpOptions): Promise<UpResult>
  status(): Promise<ScopeStatus[]>
  provision(tenant: string, options?: ProvisionOptions): Promise<UpResult>
  deprovision(
    tenant: string,
    options: { mode: 'archive' | 'drop' },
  ): Promise<{ tenant: string; archivedAs?: string }>
  /** Ends the migrator's connections. */
  close(): Promise<void>
}

/** Lock-safe, resumable migrations for the shared database and every tenant scope of a fleet. */
export function createMigrator(options: MigratorOptions): Migrator {
  const parsed = migratorOptionsSchema.safeParse(options)
  if (!parsed.success) {
    throw new MigrateError(
      'KEEL_MIGRATE_CONFIG_INVALID',
      `invalid migrator options: ${z.prettifyError(parsed.error)}`,
      {
        details: { issues: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) },
      },
    )
  }
  return new FleetMigrator(parsed.data)
}

class FleetMigrator implements Migrator {
  readonly #options: ResolvedMigratorOptions
  #pool: pg.Pool | undefined

  constructor(options: ResolvedMigratorOptions) {
    this.#options = options
  }

  get #main(): pg.Pool {
    if (this.#pool === undefined) {
      // One connection per tenant migrated at once, one for the shared scope and blocker probes.
      this.#pool = new pg.Pool({
        ...(this.#options.connection as pg.PoolConfig),
        max: this.#options.concurrency + 2,
        allowExitOnIdle: true,
      })
      this.#pool.on('error', () => undefined)
    }
    return this.#pool
  }

  #emit = (event: MigrateEvent) => {
    try {
      this.#options.onEvent?.(event)
    } catch {
      // A throwing progress callback must not fail a migration.
    }
  }

  #scopeOptions(): ScopeOptions {
    const o = this.#options
    return {
      lockTimeoutMs: o.lockTimeoutMs,
      maxLockWaitMs: o.maxLockWaitMs,
      statementTimeoutMs: o.statementTimeoutMs,
      concurrentStatementTimeoutMs: o.concurrentStatementTimeoutMs,
      scopeLockWaitMs: o.scopeLockWaitMs,
      lint: o.lint,
      maxReplicaLagMs: o.maxReplicaLagMs,
      emit: this.#emit,
      lintedOnce: new Set(),
    }
  }

  async #migrations(): Promise<{ shared: Migration[]; tenant: Migration[] }> {
    const [shared, tenant] = await Promise.all([
      readMigrations(this.#options.dir, 'shared'),
      readMigrations(this.#options.dir, 'tenant'),
    ])
    if (tenant.length > 0 && this.#options.tenancy.mode === 'rls') {
      throw new MigrateError(
        'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
        `tenancy mode 'rls' has no tenant scopes, but ${this.#options.dir}/tenant/ holds ${tenant.length} migration(s): in rls mode every tenant shares the tables, so put them in shared/`,
        { details: { files: tenant.map((m) => m.id) } },
      )
    }
    return { shared, tenant }
  }

  async #tenantIds(only?: readonly string[]): Promise<string[]> {
    if (this.#options.tenancy.mode === 'rls') return []
    const source = this.#options.tenants
    if (source === undefined) {
      throw new MigrateError(
        'KEEL_MIGRATE_CONFIG_INVALID',
        `tenancy mode '${this.#options.tenancy.mode}' needs \`tenants\` (an array or a function returning the fleet's tenant ids)`,
      )
    }
    const ids = [...(typeof source === 'function' ? await source() : source)].map(checkTenantId)
    if (only === undefined) return [...new Set(ids)]
    const wanted = new Set(only.map(checkTenantId))
    return [...new Set(ids.filter((id) => wanted.has(id)))]
  }

  async up(upOptions: UpOptions = {}): Promise<UpResult> {
    const started = performance.now()
    const { shared, tenant } = await this.#migrations()
    const ids = tenant.length > 0 ? await this.#tenantIds(upOptions.tenants) : []
    const scopeOptions = this.#scopeOptions()
    const result: UpResult = {
      applied: [],
      failed: [],
      skipped: [],
      rebuiltIndexes: [],
      tenants: ids.length,
      durationMs: 0,
    }
    this.#emit({ type: 'fleet-start', tenants: ids.length })

    this.#emit({ type: 'scope-start', tenant: null })
    const sharedStarted = performance.now()
    try {
      const client = await this.#main.connect()
      let broken: Error | undefined
      try {
        await ensureLedger(client)
        const done = await runScope(this.#sharedTarget(client), shared, scopeOptions)
        result.applied.push(...done.applied)
        result.rebuiltIndexes.push(...done.rebuiltIndexes)
        this.#emit({
          type: 'scope-done',
          tenant: null,
          applied: done.applied.length,
          durationMs: Math.round(performance.now() - sharedStarted),
        })
      } catch (error) {
        broken = error as Error
        throw error
      } finally {
        client.release(broken !== undefined && !(broken instanceof MigrateError) ? broken : undefined)
      }
    } catch (error) {
      const failure = asFailure(null, error)
      result.failed.push(failure)
      result.skipped = ids
      this.#emit({ type: 'scope-failed', tenant: null, migration: failure.migration, error: failure.error })
      for (const id of ids)
        this.#emit({ type: 'scope-skipped', tenant: id, reason: 'the shared migrations failed' })
      result.durationMs = Math.round(performance.now() - started)
      return result
    }

    const fleet = await runFleet(
      ids,
      this.#options.concurrency,
      this.#options.canary,
      (id) => this.#migrateTenant(id, tenant, scopeOptions),
      this.#options.pauseBetweenTenantsMs,
    )
    for (const outcome of fleet.outcomes) {
      if (outcome.ok) {
        result.applied.push(...outcome.value.applied)
        result.rebuiltIndexes.push(...outcome.value.rebuiltIndexes)
      } else {
        result.failed.push(asFailure(outcome.id, outcome.error))
      }
    }
    result.skipped = fleet.skipped
    for (const id of fleet.skipped)
      this.#emit({ type: 'scope-skipped', tenant: id, reason: 'a canary tenant failed' })
    result.durationMs = Math.round(performance.now() - started)
    return result
  }

  #sharedTarget(client: pg.ClientBase): ScopeTarget {
    return {
      tenant: null,
      scope: 'shared',
      schema: undefined,
      extraSchemas: [],
      client,
      connectMonitor: () => connectClient(this.#options.connection as pg.ClientConfig),
    }
  }

  async #migrateTenant(id: string, migrations: readonly Migration[], scopeOptions: ScopeOptions) {
    const started = performance.now()
    this.#emit({ type: 'scope-start', tenant: id })
    try {
      const placement = await placeTenant(this.#options, id)
      const done = await this.#withTenantClient(placement, async (client) => {
        if (placement.schema !== undefined) {
          const exists = await client.query<{ ok: boolean }>('SELECT to_regnamespace($1) IS NOT NULL AS ok', [
            quoteIdent(placement.schema),
          ])
          if (exists.rows[0]?.ok !== true) {
            throw new MigrateError(
              'KEEL_MIGRATION_FAILED',
              `tenant ${JSON.stringify(id)}: schema ${placement.schema} does not exist; provision the tenant first (keel tenants provision ${id})`,
              { details: { tenant: id, migration: null } },
            )
          }
        }
        return runScope(this.#tenantTarget(placement, client), migrations, scopeOptions)
      })
      this.#emit({
        type: 'scope-done',
        tenant: id,
        applied: done.applied.length,
        durationMs: Math.round(performance.now() - started),
      })
      return done
    } catch (error) {
      const failure = asFailure(id, error)
      this.#emit({ type: 'scope-failed', tenant: id, migration: failure.migration, error: failure.error })
      throw error
    }
  }

  #tenantTarget(placement: TenantPlacement, client: pg.ClientBase): ScopeTarget {
    return {
      tenant: placement.tenant,
      scope: ledgerScope(placement),
      schema: placement.schema,
      extraSchemas: placement.kind === 'schema' ? placement.extraSchemas : [],
      client,
      connectMonitor: () => connectClient(placement.config),
    }
  }

  /** Schema mode: a connection of the main pool. Database mode: a connection to the tenant's database. */
  async #withTenantClient<T>(
    placement: TenantPlacement,
    body: (client: pg.ClientBase) => Promise<T>,
  ): Promise<T> {
    if (placement.kind === 'schema') {
      const client = await this.#main.connect()
      let broken: Error | undefined
      try {
        return await body(client)
      } catch (error) {
        if (!(error instanceof MigrateError) || error.code === 'KEEL_MIGRATION_FAILED')
          broken = error as Error
        throw error
      } finally {
        // A connection that saw a failure is not reused: it may hold session state or a dead socket.
        client.release(broken)
      }
    }
    const client = await connectClient(placement.config)
    try {
      await ensureLedger(client)
      return await body(client)
    } finally {
      await client.end().catch(() => undefined)
    }
  }

  async status(): Promise<ScopeStatus[]> {
    const { shared, tenant } = await this.#migrations()
    const ids = tenant.length > 0 ? await this.#tenantIds() : []
    const out: ScopeStatus[] = []
    const client = await this.#main.connect()
    try {
      out.push(await scopeStatus(client, null, 'shared', shared))
    } finally {
      client.release()
    }
    const fleet = await runFleet(ids, this.#options.concurrency, 0, async (id) => {
      const placement = await placeTenant(this.#options, id)
      if (placement.kind === 'schema') {
        const c = await this.#main.connect()
        try {
          return await scopeStatus(c, id, ledgerScope(placement), tenant, placement.schema)
        } finally {
          c.release()
        }
      }
      let c: pg.Client
      try {
        c = await connectClient(placement.config)
      } catch (error) {
        return {
          ...emptyStatus(id, tenant),
          state: (error as { code?: string }).code === '3D000' ? 'missing' : 'error',
          failure: { migration: null, error: (error as Error).message, at: new Date() },
        } satisfies ScopeStatus
      }
      try {
        return await scopeStatus(c, id, ledgerScope(placement), tenant, placement.schema)
      } finally {
        await c.end().catch(() => undefined)
      }
    })
    const byId = new Map(fleet.outcomes.map((o) => [o.id, o]))
    for (const id of ids) {
      const o = byId.get(id)!
      out.push(
        o.ok
          ? o.value
          : {
              ...emptyStatus(id, tenant),
              state: 'error',
              failure: { migration: null, error: o.error.message, at: new Date() },
            },
      )
    }
    return out
  }

  async provision(tenant: string, options: ProvisionOptions = {}): Promise<UpResult> {
    const placement = await this.#placeForProvisioning(tenant)
    const { tenant: migrations } = await this.#migrations()
    await createTenantScope(this.#options, this.#main, placement, options)
    const started = performance.now()
    const scopeOptions = this.#scopeOptions()
    const result: UpResult = {
      applied: [],
      failed: [],
      skipped: [],
      rebuiltIndexes: [],
      tenants: 1,
      durationMs: 0,
    }
    try {
      const done = await this.#migrateTenant(tenant, migrations, scopeOptions)
      result.applied = done.applied
      result.rebuiltIndexes = done.rebuiltIndexes
    } catch (error) {
      result.failed.push(asFailure(tenant, error))
    }
    result.durationMs = Math.round(performance.now() - started)
    return result
  }

  async #placeForProvisioning(tenant: string): Promise<TenantPlacement> {
    if (this.#options.tenancy.mode === 'rls') {
      throw new MigrateError(
        'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
        "tenancy mode 'rls' has nothing to provision: a tenant is its rows in the shared tables",
      )
    }
    return placeTenant(this.#options, tenant)
  }

  async deprovision(
    tenant: string,
    options: { mode: 'archive' | 'drop' },
  ): Promise<{ tenant: string; archivedAs?: string }> {
    const mode = (options as { mode?: unknown } | undefined)?.mode
    if (mode !== 'archive' && mode !== 'drop') {
      throw new MigrateError(
        'KEEL_MIGRATE_DEPROVISION_MODE_REQUIRED',
        `deprovision(${JSON.stringify(tenant)}) needs { mode: 'archive' } (rename, keep the data) or { mode: 'drop' } (delete it)`,
        { details: { tenant } },
      )
    }
    const placement = await this.#placeForProvisioning(tenant)
    return retireTenantScope(this.#options, this.#main, tenant, placement, mode)
  }

  async close(): Promise<void> {
    const pool = this.#pool
    this.#pool = undefined
    await pool?.end()
  }
}

function asFailure(tenant: string | null, error: unknown): FailedScope {
  const e = error instanceof Error ? error : new Error(String(error))
  const migration = (e as { details?: { migration?: unknown } }).details?.migration
  return { tenant, migration: typeof migration === 'string' ? migration : null, error: e }
}

function emptyStatus(tenant: string | null, migrations: readonly Migration[]): ScopeStatus {
  return {
    tenant,
    state: 'pending',
    applied: 0,
    pending: migrations.map((m) => m.id),
    drift: [],
    unknown: [],
    inProgress: [],
    failure: null,
  }
}

async function scopeStatus(
  client: pg.ClientBase,
  tenant: string | null,
  scope: string,
  migrations: readonly Migration[],
  schema?: string,
): Promise<ScopeStatus> {
  if (schema !== undefined) {
    const exists = await client.query<{ ok: boolean }>('SELECT to_regnamespace($1) IS NOT NULL AS ok', [
      quoteIdent(schema),
    ])
    if (exists.rows[0]?.ok !== true) return { ...emptyStatus(tenant, migrations), state: 'missing' }
  }
  const ledger = await client.query<{ ok: boolean }>(
    "SELECT to_regclass('keel_migrate.failure') IS NOT NULL AS ok",
  )
  if (ledger.rows[0]?.ok !== true)
    return { ...emptyStatus(tenant, migrations), state: migrations.length > 0 ? 'pending' : 'ok' }
  const state = await readLedger(client, scope)
  const onDisk = new Map(migrations.map((m) => [m.id, m]))
  const status: ScopeStatus = {
    tenant,
    state: 'ok',
    applied: state.applied.size,
    pending: migrations.filter((m) => !state.applied.has(m.id)).map((m) => m.id),
    drift: [...state.applied]
      .filter(([id, row]) => onDisk.has(id) && onDisk.get(id)!.checksum !== row.checksum)
      .map(([id]) => id),
    unknown: [...state.applied.keys()].filter((id) => !onDisk.has(id)),
    inProgress: [...state.progress.keys()],
    failure:
      state.failure === undefined
        ? null
        : { migration: state.failure.id, error: state.failure.error, at: state.failure.failedAt },
  }
  status.state = status.failure !== null ? 'failed' : status.pending.length > 0 ? 'pending' : 'ok'
  return status
}
