import type pg from 'pg'
import type { ResolvedMigratorOptions } from '../config/migrator-options.js'
import { MigrateError } from '../errors.js'
import { ensureLedger } from './ledger.js'
import { BlockerProbe, withLockRetry } from './lock-retry.js'
import { quoteIdent } from './scope-session.js'
import { connectClient, ledgerScope, maintenanceConfig, type TenantPlacement } from './tenant-scopes.js'

// A tenant scope's life outside its migrations: created by provision() (its migrations then run like
// any tenant's) and archived or dropped by deprovision(). Apart from the migrator, which runs them.

export interface ProvisionOptions {
  /** database mode: CREATE DATABASE ... TEMPLATE this database. */
  template?: string
  /**
   * database mode: the app's runtime role. A new database then admits only it: PUBLIC's default
   * CONNECT and TEMPORARY are revoked and granted to this role, with USAGE on schema public (the
   * doctor's tenant-database-connect rule). Without it the database keeps Postgres' defaults.
   */
  runtimeRole?: string
}

/**
 * Creates the tenant's schema, or its database (from `template` when given), if it is not there. A
 * database made for a `runtimeRole` admits only that role (and the owner), not PUBLIC.
 */
export async function createTenantScope(
  options: ResolvedMigratorOptions,
  main: pg.Pool,
  placement: TenantPlacement,
  { template, runtimeRole }: ProvisionOptions,
): Promise<void> {
  if (placement.kind === 'schema') {
    const client = await main.connect()
    try {
      await ensureLedger(client)
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(placement.schema)}`)
    } finally {
      client.release()
    }
  } else {
    const admin = await connectClient(maintenanceConfig(options, placement.config))
    try {
      if (runtimeRole !== undefined) {
        const role = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [runtimeRole])
        if (role.rowCount === 0) {
          throw new MigrateError(
            'KEEL_MIGRATE_CONFIG_INVALID',
            `provision: runtimeRole ${JSON.stringify(runtimeRole)} does not exist on the tenant's server`,
          )
        }
      }
      const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [placement.database])
      if (exists.rowCount === 0) {
        const from = template === undefined ? '' : ` TEMPLATE ${quoteIdent(template)}`
        await admin.query(`CREATE DATABASE ${quoteIdent(placement.database)}${from}`)
        if (runtimeRole !== undefined) {
          // Postgres gives PUBLIC CONNECT and TEMPORARY on every new database: any role of the server
          // could then connect to this tenant's (docs/doctor/tenant-database-connect.md).
          const db = quoteIdent(placement.database)
          await admin.query(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC`)
          await admin.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${db} TO ${quoteIdent(runtimeRole)}`)
        }
      }
    } finally {
      await admin.end().catch(() => undefined)
    }
    if (placement.schema !== undefined || runtimeRole !== undefined) {
      const client = await connectClient(placement.config)
      try {
        if (placement.schema !== undefined) {
          await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(placement.schema)}`)
        }
        if (runtimeRole !== undefined) {
          await client.query(`GRANT USAGE ON SCHEMA public TO ${quoteIdent(runtimeRole)}`)
        }
      } finally {
        await client.end()
      }
    }
  }
}

/**
 * Archives (renames, keeping the data) or drops a tenant's schema or database, with its ledger rows;
 * never while a runner migrates the tenant (its scope lock), and with lock_timeout retries.
 */
export async function retireTenantScope(
  options: ResolvedMigratorOptions,
  main: pg.Pool,
  tenant: string,
  placement: TenantPlacement,
  mode: 'archive' | 'drop',
): Promise<{ tenant: string; archivedAs?: string }> {
  const stamp = new Date()
    .toISOString()
    .replace(/[-:TZ.]/g, '')
    .slice(0, 14)
  const archived = (name: string) =>
    `${Buffer.from(name)
      .subarray(0, 63 - 24)
      .toString('utf8')
      .replace(/\uFFFD+$/, '')}_archived_${stamp}`
  if (placement.kind === 'schema') {
    const client = await main.connect()
    const probe = new BlockerProbe(() => connectClient(options.connection as pg.ClientConfig), 0)
    try {
      await ensureLedger(client)
      const scope = ledgerScope(placement)
      const newName = archived(placement.schema)
      await withLockRetry(
        `deprovision ${tenant}`,
        {
          lockTimeoutMs: options.lockTimeoutMs,
          maxLockWaitMs: options.maxLockWaitMs,
          onRetry: () => undefined,
        },
        probe,
        async () => {
          await client.query('BEGIN')
          try {
            await client.query("SELECT set_config('lock_timeout', $1, true)", [`${options.lockTimeoutMs}ms`])
            // The scope's lock: never while a runner migrates this tenant.
            const got = await client.query<{ ok: boolean }>(
              'SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS ok',
              [0x6b6d6967, scope],
            )
            if (got.rows[0]?.ok !== true)
              throw Object.assign(new Error('a runner is migrating this tenant'), { code: '55P03' })
            if (mode === 'archive') {
              await client.query(
                `ALTER SCHEMA ${quoteIdent(placement.schema)} RENAME TO ${quoteIdent(newName)}`,
              )
              await client.query('UPDATE keel_migrate.ledger SET scope = $2 WHERE scope = $1', [
                scope,
                `schema:${newName}`,
              ])
            } else {
              await client.query(`DROP SCHEMA IF EXISTS ${quoteIdent(placement.schema)} CASCADE`)
              await client.query('DELETE FROM keel_migrate.ledger WHERE scope = $1', [scope])
            }
            await client.query('DELETE FROM keel_migrate.progress WHERE scope = $1', [scope])
            await client.query('DELETE FROM keel_migrate.failure WHERE scope = $1', [scope])
            await client.query('COMMIT')
          } catch (error) {
            await client.query('ROLLBACK').catch(() => undefined)
            throw error
          }
        },
      )
      return mode === 'archive' ? { tenant, archivedAs: newName } : { tenant }
    } finally {
      await probe.close()
      client.release()
    }
  }
  const admin = await connectClient(maintenanceConfig(options, placement.config))
  try {
    if (mode === 'archive') {
      const newName = archived(placement.database)
      try {
        await admin.query(`ALTER DATABASE ${quoteIdent(placement.database)} RENAME TO ${quoteIdent(newName)}`)
      } catch (error) {
        if ((error as { code?: string }).code === '55006') {
          throw new MigrateError(
            'KEEL_MIGRATION_FAILED',
            `database ${placement.database} of tenant ${JSON.stringify(tenant)} still has connections: stop routing the tenant (resolve -> null) and close its pools before archiving`,
            { cause: error, details: { tenant } },
          )
        }
        throw error
      }
      return { tenant, archivedAs: newName }
    }
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(placement.database)} WITH (FORCE)`)
    return { tenant }
  } finally {
    await admin.end().catch(() => undefined)
  }
}
