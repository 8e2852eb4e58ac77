import pg from 'pg'
import type { ResolvedMigratorOptions, ResolvedTenantPlacement } from '../config/migrator-options.js'
import { MigrateError } from '../errors.js'

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters in a tenant id are refused on purpose
const FORBIDDEN = /[\u0000-\u001f\u007f'"\\;\s]/

/** The same refusals as core's tenant id check: these never reach Postgres as part of a name. */
export function checkTenantId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id, 'utf8') > 63 || FORBIDDEN.test(id)) {
    throw new MigrateError('KEEL_MIGRATE_CONFIG_INVALID', `tenant id ${JSON.stringify(id)} is not allowed`, {
      details: { tenant: String(id) },
    })
  }
  return id
}

/** Where a tenant's migrations run, before connecting. */
export type TenantPlacement =
  | {
      kind: 'schema'
      tenant: string
      schema: string
      extraSchemas: readonly string[]
      config: pg.ClientConfig
    }
  | {
      kind: 'database'
      tenant: string
      /** A tenant database resolved with isolation 'schema' keeps its objects in this schema of it. */
      schema: string | undefined
      database: string
      config: pg.ClientConfig
      placement: ResolvedTenantPlacement
    }

export function ledgerScope(placement: TenantPlacement): string {
  return placement.schema === undefined ? 'database' : `schema:${placement.schema}`
}

export function schemaName(options: ResolvedMigratorOptions, tenant: string): string {
  if (options.tenancy.mode !== 'schema') throw new Error('schema mode only')
  const name = (options.tenancy.schemaFor as (id: string) => string)(tenant)
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name, 'utf8') > 63) {
    throw new MigrateError(
      'KEEL_MIGRATE_CONFIG_INVALID',
      `schemaFor(${JSON.stringify(tenant)}) must return a name of 1 to 63 bytes (UTF-8)`,
      { details: { tenant } },
    )
  }
  return name
}

/** The owner credentials of `connection`, applied to a tenant database's URL (resolve returns the app's). */
function ownerConfigFor(options: ResolvedMigratorOptions, connectionString: string): pg.ClientConfig {
  const url = new URL(connectionString)
  const owner = options.connection as pg.ClientConfig
  if (owner.connectionString !== undefined) {
    const ownerUrl = new URL(owner.connectionString)
    url.username = ownerUrl.username
    url.password = ownerUrl.password
  }
  if (typeof owner.user === 'string') url.username = encodeURIComponent(owner.user)
  if (typeof owner.password === 'string') url.password = encodeURIComponent(owner.password)
  return { ...owner, connectionString: url.toString(), host: undefined, port: undefined, database: undefined }
}

export async function placeTenant(
  options: ResolvedMigratorOptions,
  tenant: string,
): Promise<TenantPlacement> {
  checkTenantId(tenant)
  const tenancy = options.tenancy
  if (tenancy.mode === 'schema') {
    return {
      kind: 'schema',
      tenant,
      schema: schemaName(options, tenant),
      extraSchemas: tenancy.sharedSchemas as string[],
      config: options.connection as pg.ClientConfig,
    }
  }
  if (tenancy.mode === 'database') {
    const resolve = tenancy.resolve as (id: string) => Promise<ResolvedTenantPlacement | null>
    const placement = await resolve(tenant)
    if (placement === null || placement === undefined) {
      throw new MigrateError(
        'KEEL_MIGRATE_TENANT_UNKNOWN',
        `tenancy.resolve(${JSON.stringify(tenant)}) returned null`,
        {
          details: { tenant },
        },
      )
    }
    const config =
      options.tenantConnection?.(tenant, placement) ??
      ownerConfigFor(options, placement.primary.connectionString)
    const database = decodeURIComponent(new URL(placement.primary.connectionString).pathname.slice(1))
    const isolation = placement.isolation ?? 'database'
    if (isolation === 'rls') {
      throw new MigrateError(
        'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
        `tenant ${JSON.stringify(tenant)} is placed with isolation 'rls': its rows live in shared tables, migrate that database's shared/ migrations instead`,
        { details: { tenant } },
      )
    }
    const schema = isolation === 'schema' ? (placement.schema ?? `tenant_${tenant}`) : undefined
    return { kind: 'database', tenant, schema, database, config, placement }
  }
  throw new MigrateError(
    'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
    "tenancy mode 'rls' has no tenant scopes: every tenant shares the tables of shared/ migrations (put them there; tenant/ must be empty)",
  )
}

/** A connection to the tenant database's server, on the maintenance database (CREATE/DROP DATABASE). */
export function maintenanceConfig(
  options: ResolvedMigratorOptions,
  config: pg.ClientConfig,
): pg.ClientConfig {
  const url = new URL(config.connectionString!)
  url.pathname = `/${encodeURIComponent(options.maintenanceDatabase)}`
  return { ...config, connectionString: url.toString() }
}

export async function connectClient(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client(config)
  // An 'error' event (the server closed the session) must not crash the process; the next query fails.
  client.on('error', () => undefined)
  await client.connect()
  return client
}
