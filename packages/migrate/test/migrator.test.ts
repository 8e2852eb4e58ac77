import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMigrator, isMigrateError, type MigrateEvent } from '../src/index.js'
import { connect, dropFleet, migrationsDir, readStack, uniquePrefix, writeMigration } from './support.js'

// Schema mode, one shared database: shared/ runs once, tenant/ in each tenant's schema, every migration
// recorded in keel_migrate.ledger in its own transaction.
const prefix = uniquePrefix('m')
const tenants = ['a', 'b', 'c', 'd'].map((t) => `${prefix}${t}`)
const schemaFor = (id: string) => `tenant_${id}`
const schemas = tenants.map(schemaFor)
const effects = `${prefix}_effects`

const files = {
  // Every migration bumps a counter in the same transaction: a migration applied twice shows up as 2.
  'shared/0001_effects.sql': `CREATE TABLE ${effects} (scope text, migration text, n int NOT NULL DEFAULT 1);`,
  'tenant/0001_notes.sql': `CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);
    INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0001');`,
  'tenant/0002_notes_author.sql': `ALTER TABLE notes ADD COLUMN author text;
    INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0002');`,
}

let dir: string
const ownerUrl = () => readStack().primary.ownerUrl
const make = (extra: Partial<Parameters<typeof createMigrator>[0]> = {}) =>
  createMigrator({
    connection: { connectionString: ownerUrl() },
    dir,
    tenancy: { mode: 'schema', schemaFor },
    tenants: async () => tenants,
    ...extra,
  })

beforeAll(() => {
  dir = migrationsDir(files)
})

afterAll(async () => {
  await dropFleet([...schemas, ...schemas.map((s) => `${s}_x`)])
  const owner = await connect('owner')
  await owner.query(`DROP TABLE IF EXISTS ${effects}`)
  await owner.query('DELETE FROM keel_migrate.ledger WHERE scope LIKE $1', [`schema:tenant_${prefix}%`])
  await owner.query("DELETE FROM keel_migrate.ledger WHERE scope = 'shared' AND id LIKE '0001_effects'")
  await owner.end()
})

describe('createMigrator in schema mode', () => {
  it('provisions tenants, applies shared once and tenant migrations in every schema, exactly once', async () => {
    const migrator = make()
    try {
      // shared/ first (no tenant yet): provision() runs tenant/ only.
      expect((await migrator.up({ tenants: [] })).failed).toEqual([])
      for (const t of tenants) {
        const r = await migrator.provision(t)
        expect(r.failed).toEqual([])
      }
      const again = await migrator.up()
      expect(again.failed).toEqual([])
      expect(again.applied).toEqual([])
      const owner = await connect('owner')
      const counts = await owner.query(
        `SELECT scope, migration, sum(n)::int AS n FROM ${effects} GROUP BY 1, 2`,
      )
      expect(counts.rows).toHaveLength(tenants.length * 2)
      expect(counts.rows.every((r) => r.n === 1)).toBe(true)
      const ledger = await owner.query(
        'SELECT scope, id, applied_by, duration_ms FROM keel_migrate.ledger WHERE scope = ANY($1::text[]) ORDER BY 1, 2',
        [schemas.map((s) => `schema:${s}`)],
      )
      expect(ledger.rows).toHaveLength(tenants.length * 2)
      expect(ledger.rows[0].applied_by).toContain(`pid ${process.pid}`)
      await owner.end()
      const status = await migrator.status()
      expect(status.map((s) => s.state)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok'])
    } finally {
      await migrator.close()
    }
  })

  it('reports a failing tenant alone and finishes the others; status shows it failed; a rerun after the fix resumes', async () => {
    const owner = await connect('owner')
    // The bad tenant already has a column the next migration adds: only its scope fails.
    await owner.query(`ALTER TABLE "${schemas[1]}".notes ADD COLUMN tag text`)
    writeMigration(
      dir,
      'tenant/0003_notes_tag.sql',
      `ALTER TABLE notes ADD COLUMN tag text;
      INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0003');`,
    )
    const events: MigrateEvent[] = []
    const migrator = make({ onEvent: (e) => events.push(e) })
    try {
      const result = await migrator.up()
      expect(result.failed).toHaveLength(1)
      expect(result.failed[0]).toMatchObject({ tenant: tenants[1], migration: '0003_notes_tag' })
      expect(isMigrateError(result.failed[0]!.error, 'KEEL_MIGRATION_FAILED')).toBe(true)
      expect((result.failed[0]!.error.cause as { code?: string }).code).toBe('42701')
      expect(result.applied.map((a) => a.tenant).sort()).toEqual([tenants[0], tenants[2], tenants[3]].sort())
      expect(events.some((e) => e.type === 'scope-failed' && e.tenant === tenants[1])).toBe(true)
      const status = await migrator.status()
      const bad = status.find((s) => s.tenant === tenants[1])!
      expect(bad.state).toBe('failed')
      expect(bad.pending).toEqual(['0003_notes_tag'])
      expect(bad.failure?.migration).toBe('0003_notes_tag')

      await owner.query(`ALTER TABLE "${schemas[1]}".notes DROP COLUMN tag`)
      const fixed = await migrator.up()
      expect(fixed.failed).toEqual([])
      expect(fixed.applied).toEqual([
        expect.objectContaining({ tenant: tenants[1], migration: '0003_notes_tag' }),
      ])
      expect((await migrator.status()).every((s) => s.state === 'ok')).toBe(true)
      const twice = await owner.query(`SELECT count(*)::int AS n FROM ${effects} WHERE n <> 1`)
      expect(twice.rows[0].n).toBe(0)
    } finally {
      await migrator.close()
      await owner.end()
    }
  })

  it('refuses an applied migration whose file changed (checksum) in every scope, and status shows the drift', async () => {
    writeMigration(dir, 'tenant/0002_notes_author.sql', `ALTER TABLE notes ADD COLUMN author text; -- edited`)
    const migrator = make()
    try {
      const result = await migrator.up()
      expect(result.failed).toHaveLength(tenants.length)
      for (const f of result.failed)
        expect(isMigrateError(f.error, 'KEEL_MIGRATION_CHECKSUM_MISMATCH')).toBe(true)
      const status = await migrator.status()
      expect(status.filter((s) => s.drift.includes('0002_notes_author'))).toHaveLength(tenants.length)
    } finally {
      writeMigration(dir, 'tenant/0002_notes_author.sql', files['tenant/0002_notes_author.sql'])
      await migrator.close()
    }
  })

  it('two runners at once: per-tenant advisory locks, every migration applied exactly once', async () => {
    writeMigration(
      dir,
      'tenant/0004_notes_idx.sql',
      `CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);`,
    )
    writeMigration(
      dir,
      'tenant/0005_more.sql',
      `CREATE TABLE more (id int);
      INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0005');`,
    )
    const a = make({ concurrency: 2 })
    const b = make({ concurrency: 2, tenants: async () => [...tenants].reverse() })
    try {
      const [ra, rb] = await Promise.all([a.up(), b.up()])
      expect(ra.failed).toEqual([])
      expect(rb.failed).toEqual([])
      // Each tenant's two migrations were applied by one runner or the other, never both.
      expect(ra.applied.length + rb.applied.length).toBe(tenants.length * 2)
      const owner = await connect('owner')
      const counts = await owner.query(
        `SELECT scope, migration, sum(n)::int AS n FROM ${effects} WHERE migration = '0005' GROUP BY 1, 2`,
      )
      expect(counts.rows).toHaveLength(tenants.length)
      expect(counts.rows.every((r) => r.n === 1)).toBe(true)
      await owner.end()
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('canary: a failing canary tenant stops the fleet, the rest are skipped', async () => {
    const owner = await connect('owner')
    await owner.query(`CREATE TABLE "${schemas[0]}".canary (id int)`)
    writeMigration(dir, 'tenant/0006_canary.sql', 'CREATE TABLE canary (id int);')
    const migrator = make({ canary: 1, concurrency: 1 })
    try {
      const result = await migrator.up()
      expect(result.failed.map((f) => f.tenant)).toEqual([tenants[0]])
      expect(result.skipped).toEqual(tenants.slice(1))
      await owner.query(`DROP TABLE "${schemas[0]}".canary`)
      const rerun = await migrator.up()
      expect(rerun.failed).toEqual([])
      expect(rerun.applied).toHaveLength(tenants.length)
    } finally {
      await migrator.close()
      await owner.end()
    }
  })

  it('deprovision needs an explicit mode; archive renames the schema and keeps its ledger; drop removes both', async () => {
    const migrator = make()
    try {
      await expect(migrator.deprovision(tenants[2]!, {} as never)).rejects.toMatchObject({
        code: 'KEEL_MIGRATE_DEPROVISION_MODE_REQUIRED',
      })
      const archived = await migrator.deprovision(tenants[2]!, { mode: 'archive' })
      expect(archived.archivedAs).toMatch(new RegExp(`^${schemas[2]}_archived_\\d{14}$`))
      const owner = await connect('owner')
      const moved = await owner.query('SELECT count(*)::int AS n FROM keel_migrate.ledger WHERE scope = $1', [
        `schema:${archived.archivedAs}`,
      ])
      expect(moved.rows[0].n).toBeGreaterThan(0)
      await owner.query(`DROP SCHEMA "${archived.archivedAs}" CASCADE`)
      await owner.query('DELETE FROM keel_migrate.ledger WHERE scope = $1', [`schema:${archived.archivedAs}`])
      await migrator.deprovision(tenants[3]!, { mode: 'drop' })
      const gone = await owner.query('SELECT to_regnamespace($1) AS s', [schemas[3]])
      expect(gone.rows[0].s).toBeNull()
      const ledger = await owner.query(
        'SELECT count(*)::int AS n FROM keel_migrate.ledger WHERE scope = $1',
        [`schema:${schemas[3]}`],
      )
      expect(ledger.rows[0].n).toBe(0)
      await owner.end()
      // A tenant of the fleet without its schema is reported, not created behind the owner's back.
      const result = await migrator.up()
      expect(result.failed.map((f) => f.tenant).sort()).toEqual([tenants[2], tenants[3]].sort())
      expect(result.failed[0]!.error.message).toContain('provision')
    } finally {
      await migrator.close()
    }
  })

  it('rls mode: tenant/ migrations are refused with a clear message; shared-only runs', async () => {
    const rlsDir = migrationsDir({ 'tenant/0001_x.sql': 'CREATE TABLE x (id int);' })
    const migrator = createMigrator({ connection: ownerUrl(), dir: rlsDir, tenancy: { mode: 'rls' } })
    try {
      await expect(migrator.up()).rejects.toMatchObject({
        code: 'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
        message: expect.stringContaining('put them in shared/'),
      })
      await expect(migrator.provision('acme')).rejects.toMatchObject({
        code: 'KEEL_MIGRATE_TENANCY_UNSUPPORTED',
      })
    } finally {
      await migrator.close()
    }
  })

  it('bad options and bad files are KeelError-style errors with stable codes', async () => {
    expect(() => createMigrator({ connection: ownerUrl(), dir, lockTimeoutMs: -1 })).toThrow(
      expect.objectContaining({ code: 'KEEL_MIGRATE_CONFIG_INVALID' }),
    )
    const bad = migrationsDir({ 'shared/0001_tx.sql': 'BEGIN; CREATE TABLE y (id int); COMMIT;' })
    const migrator = createMigrator({ connection: ownerUrl(), dir: bad })
    await expect(migrator.up()).rejects.toMatchObject({ code: 'KEEL_MIGRATION_INVALID' })
    const badName = migrationsDir({ 'shared/create.sql': 'SELECT 1' })
    await expect(createMigrator({ connection: ownerUrl(), dir: badName }).up()).rejects.toMatchObject({
      code: 'KEEL_MIGRATION_INVALID',
    })
    const unnamed = migrationsDir({ 'shared/0001_i.sql': 'CREATE INDEX CONCURRENTLY ON t (a)' })
    await expect(createMigrator({ connection: ownerUrl(), dir: unnamed }).up()).rejects.toMatchObject({
      code: 'KEEL_MIGRATION_INVALID',
    })
    await migrator.close()
  })
})
