import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMigrator, isMigrateError, type Migrator, type ResolvedTenantPlacement } from '../src/index.js'
import { connect, migrationsDir, readStack, uniquePrefix } from './support.js'

// Database mode (core's tenancy.mode 'database' contract): each tenant's database comes from
// tenancy.resolve, which hands out the APP's connection string; the migrator connects there with the
// owner's credentials, creates the database on provision, and keeps the ledger inside it.
const prefix = uniquePrefix('d')
const role = `${prefix}_owner`
const control = `${prefix}_ctl`
const tenants = ['a', 'b', 'c'].map((t) => `${prefix}${t}`)
const dbFor = (id: string) => `${id}_db`
const created: string[] = []

let migrator: Migrator
let unknown: string | undefined

function placement(id: string): ResolvedTenantPlacement | null {
  if (id === unknown) return null
  const app = new URL(readStack().primary.url)
  app.pathname = `/${dbFor(id)}`
  return { primary: { connectionString: app.toString() } }
}

beforeAll(async () => {
  const su = await connect('super')
  // An owner role allowed to create databases, as docs/migrate.md tells database-mode users to set up.
  await su.query(`CREATE ROLE ${role} LOGIN PASSWORD 'pw' CREATEDB`)
  await su.query(`CREATE DATABASE ${control} OWNER ${role}`)
  await su.end()
  const url = new URL(readStack().primary.ownerUrl)
  url.username = role
  url.password = 'pw'
  url.pathname = `/${control}`
  const dir = migrationsDir({
    'shared/0001_plans.sql': 'CREATE TABLE plans (id int PRIMARY KEY);',
    'tenant/0001_notes.sql': 'CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);',
    'tenant/0002_notes_idx.sql': 'CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);',
  })
  migrator = createMigrator({
    connection: { connectionString: url.toString() },
    dir,
    tenancy: { mode: 'database', resolve: async (id) => placement(id), maxConnections: 20 },
    tenants: () => tenants,
  })
})

afterAll(async () => {
  await migrator.close()
  const su = await connect('super')
  const dbs = await su.query('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${prefix}%`])
  for (const r of dbs.rows) await su.query(`DROP DATABASE IF EXISTS "${r.datname}" WITH (FORCE)`)
  await su.query(`DROP ROLE IF EXISTS ${role}`)
  await su.end()
})

describe('createMigrator in database mode', () => {
  it('provision creates each tenant database and runs tenant/ in it, as the owner, with its own ledger', async () => {
    expect((await migrator.up({ tenants: [] })).failed).toEqual([])
    for (const t of tenants) {
      const r = await migrator.provision(t)
      expect(r.failed).toEqual([])
      expect(r.applied.map((a) => a.migration)).toEqual(['0001_notes', '0002_notes_idx'])
      created.push(dbFor(t))
    }
    const tenantDb = await connect('super', dbFor(tenants[0]!))
    const owner = await tenantDb.query("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'")
    expect(owner.rows[0].tableowner).toBe(role)
    const ledger = await tenantDb.query('SELECT scope, id FROM keel_migrate.ledger ORDER BY id')
    expect(ledger.rows).toEqual([
      { scope: 'database', id: '0001_notes' },
      { scope: 'database', id: '0002_notes_idx' },
    ])
    await tenantDb.end()
    const again = await migrator.up()
    expect(again.failed).toEqual([])
    expect(again.applied).toEqual([])
    expect((await migrator.status()).map((s) => s.state)).toEqual(['ok', 'ok', 'ok', 'ok'])
  })

  it('an unknown tenant (resolve -> null) is reported alone; the others migrate', async () => {
    unknown = tenants[1]
    try {
      const result = await migrator.up()
      expect(result.failed).toHaveLength(1)
      expect(result.failed[0]!.tenant).toBe(tenants[1])
      expect(isMigrateError(result.failed[0]!.error, 'KEEL_MIGRATE_TENANT_UNKNOWN')).toBe(true)
    } finally {
      unknown = undefined
    }
  })

  it('provision with runtimeRole: the new database admits that role, not PUBLIC; an unknown role is refused before anything is made', async () => {
    const locked = `${prefix}lk`
    const r = await migrator.provision(locked, { runtimeRole: 'keel_app' })
    expect(r.failed).toEqual([])
    const su = await connect('super')
    try {
      const acl = await su.query<{ public: boolean; app: boolean; other: boolean }>(
        `SELECT has_database_privilege('public', $1, 'CONNECT') AS public,
                has_database_privilege('keel_app', $1, 'CONNECT') AS app,
                has_database_privilege('keel_app', $1, 'TEMPORARY') AS temp,
                has_database_privilege($2, $1, 'CONNECT') AS other`,
        [dbFor(locked), 'pg_monitor'],
      )
      expect(acl.rows[0]).toMatchObject({ public: false, app: true, temp: true, other: false })
      const usage = await connect('super', dbFor(locked))
      const schema = await usage.query("SELECT has_schema_privilege('keel_app', 'public', 'USAGE') AS ok")
      await usage.end()
      expect(schema.rows[0].ok).toBe(true)
      const bad = await migrator
        .provision(`${prefix}nr`, { runtimeRole: 'no_such_role_x' })
        .catch((e: unknown) => e)
      expect(isMigrateError(bad, 'KEEL_MIGRATE_CONFIG_INVALID')).toBe(true)
      const made = await su.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbFor(`${prefix}nr`)])
      expect(made.rows).toEqual([])
    } finally {
      await su.end()
    }
  })

  it('provision from a template copies schema and ledger; deprovision archives (rename) or drops', async () => {
    const copy = `${prefix}tpl`
    const r = await migrator.provision(copy, { template: dbFor(tenants[0]!) })
    expect(r.failed).toEqual([])
    expect(r.applied).toEqual([])
    const archived = await migrator.deprovision(copy, { mode: 'archive' })
    expect(archived.archivedAs).toMatch(new RegExp(`^${dbFor(copy)}_archived_\\d{14}$`))
    await migrator.deprovision(tenants[2]!, { mode: 'drop' })
    const su = await connect('super')
    const dbs = await su.query('SELECT datname FROM pg_database WHERE datname = ANY($1::text[])', [
      [dbFor(copy), archived.archivedAs, dbFor(tenants[2]!)],
    ])
    expect(dbs.rows.map((d) => d.datname)).toEqual([archived.archivedAs])
    await su.end()
    const status = await migrator.status()
    expect(status.find((s) => s.tenant === tenants[2])?.state).toBe('missing')
  })
})
