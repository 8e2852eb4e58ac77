import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMigrator, isMigrateError, type MigrateEvent } from '../src/index.js'
import {
  connect,
  dropFleet,
  migrationsDir,
  readStack,
  runCli,
  uniquePrefix,
  writeMigration,
} from './support.js'

// .js/.mjs/.ts migrations (ADR 0047): the same ledger as .sql (id, checksum of the text, exactly once), run
// per tenant scope with ctx, transactional by default, `export const transaction = false` for long work.
const prefix = uniquePrefix('j')
const tenants = ['a', 'b'].map((t) => `${prefix}${t}`)
const schemas = tenants.map((t) => `tenant_${t}`)
const effects = `${prefix}_effects`

const files = {
  'shared/0001_effects.sql': `CREATE TABLE ${effects} (scope text, migration text, tenant text, in_tx boolean);`,
  'tenant/0001_notes.sql': 'CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);',
  // Transactional (the default): its effect and the ledger row commit together.
  'tenant/0002_seed.mjs': `export async function up(ctx) {
    await ctx.client.query("INSERT INTO notes (body) VALUES ('hello from ' || current_schema())")
    await ctx.client.query('INSERT INTO public.${effects} VALUES (current_schema(), $1, $2, $3)',
      [ctx.migration, ctx.tenant, ctx.inTransaction])
    ctx.log('seeded ' + ctx.schema)
  }`,
  // Outside a transaction: ctx.transaction for its own short transactions.
  'tenant/0003_plain.js': `export const transaction = false
  export async function up(ctx) {
    const lt = await ctx.client.query('SHOW lock_timeout')
    await ctx.transaction(async (c) => {
      await c.query('INSERT INTO public.${effects} VALUES (current_schema(), $1, $2, $3)',
        [ctx.migration + ':' + lt.rows[0].lock_timeout, ctx.tenant, ctx.inTransaction])
    })
  }`,
}

let dir: string
const events: MigrateEvent[] = []
const make = (extra: Partial<Parameters<typeof createMigrator>[0]> = {}) =>
  createMigrator({
    connection: readStack().primary.ownerUrl,
    dir,
    tenancy: { mode: 'schema' },
    tenants,
    lockTimeoutMs: 700,
    onEvent: (e) => events.push(e),
    ...extra,
  })

beforeAll(async () => {
  dir = migrationsDir(files)
  const owner = await connect('owner')
  for (const s of schemas) await owner.query(`CREATE SCHEMA "${s}"`)
  await owner.end()
})

afterAll(async () => {
  await dropFleet(schemas)
  const owner = await connect('owner')
  await owner.query(`DROP TABLE IF EXISTS ${effects}`)
  await owner.query("DELETE FROM keel_migrate.ledger WHERE scope = 'shared' AND id = '0001_effects'")
  await owner.query('DELETE FROM keel_migrate.progress WHERE scope = ANY($1::text[])', [
    schemas.map((s) => `schema:${s}`),
  ])
  await owner.end()
})

describe('JS migrations', () => {
  it('run once per tenant scope, in the scope, recorded in the ledger with the checksum of their text', async () => {
    const m = make()
    const r = await m.up()
    await m.close()
    expect(r.failed).toEqual([])
    const owner = await connect('owner')
    try {
      const rows = await owner.query(`SELECT scope, migration, tenant, in_tx FROM ${effects} ORDER BY 1, 2`)
      expect(rows.rows).toEqual(
        schemas.flatMap((s, i) => [
          { scope: s, migration: '0002_seed', tenant: tenants[i], in_tx: true },
          { scope: s, migration: '0003_plain:700ms', tenant: tenants[i], in_tx: false },
        ]),
      )
      const notes = await owner.query(`SELECT body FROM "${schemas[0]}".notes`)
      expect(notes.rows).toEqual([{ body: `hello from ${schemas[0]}` }])
      const ledger = await owner.query(
        "SELECT id, length(checksum) AS n FROM keel_migrate.ledger WHERE scope = $1 AND id LIKE '000%' ORDER BY id",
        [`schema:${schemas[0]}`],
      )
      expect(ledger.rows).toEqual([
        { id: '0001_notes', n: 64 },
        { id: '0002_seed', n: 64 },
        { id: '0003_plain', n: 64 },
      ])
      const progress = await owner.query(
        'SELECT count(*)::int AS n FROM keel_migrate.progress WHERE scope = $1',
        [`schema:${schemas[0]}`],
      )
      expect(progress.rows[0].n).toBe(0)
    } finally {
      await owner.end()
    }
    expect(events.some((e) => e.type === 'log' && e.message === `seeded ${schemas[0]}`)).toBe(true)

    // Exactly once: a second run applies nothing and adds no effect.
    const again = make()
    const r2 = await again.up()
    await again.close()
    expect(r2.applied).toEqual([])
    const o2 = await connect('owner')
    expect((await o2.query(`SELECT count(*)::int AS n FROM ${effects}`)).rows[0].n).toBe(4)
    await o2.end()
  })

  it('an applied .mjs whose text changed is KEEL_MIGRATION_CHECKSUM_MISMATCH, like .sql', async () => {
    writeMigration(dir, 'tenant/0002_seed.mjs', `export async function up(ctx) { /* edited */ }`)
    const m = make()
    const r = await m.up()
    await m.close()
    expect(r.failed.map((f) => f.tenant).sort()).toEqual([...tenants].sort())
    expect(r.failed.every((f) => isMigrateError(f.error, 'KEEL_MIGRATION_CHECKSUM_MISMATCH'))).toBe(true)
    // Restore it for the next tests.
    writeMigration(dir, 'tenant/0002_seed.mjs', files['tenant/0002_seed.mjs'])
  })

  it('ctx.backfill in a transactional migration is refused, the migration rolled back', async () => {
    writeMigration(
      dir,
      'tenant/0004_bad.mjs',
      `export async function up(ctx) {
        await ctx.client.query('INSERT INTO public.${effects} VALUES (current_schema(), $1, null, true)', [ctx.migration])
        await ctx.backfill({ table: 'notes', set: { body: "'x'" } })
      }`,
    )
    const m = make({ tenants: [tenants[0]!] })
    const r = await m.up()
    await m.close()
    expect(r.failed).toHaveLength(1)
    expect(isMigrateError(r.failed[0]!.error, 'KEEL_MIGRATION_INVALID')).toBe(true)
    expect(r.failed[0]!.error.message).toMatch(/export const transaction = false/)
    const owner = await connect('owner')
    expect(
      (await owner.query(`SELECT count(*)::int AS n FROM ${effects} WHERE migration = '0004_bad'`)).rows[0].n,
    ).toBe(0)
    await owner.end()
    writeMigration(dir, 'tenant/0004_bad.mjs', 'export async function up() {}')
  })

  it('a .ts migration runs where the process can import TypeScript (here: vitest, a loader)', async () => {
    writeMigration(
      dir,
      'tenant/0005_typed.ts',
      `import type { MigrationContext } from '@keel/migrate'
       export async function up(ctx: MigrationContext): Promise<void> {
         const label: string = 'typed'
         await ctx.client.query('INSERT INTO public.${effects} VALUES (current_schema(), $1, $2, $3)', [label, ctx.tenant, ctx.inTransaction])
       }`,
    )
    const m = make({ tenants: [tenants[0]!] })
    const r = await m.up()
    await m.close()
    expect(r.failed).toEqual([])
    const owner = await connect('owner')
    expect(
      (await owner.query(`SELECT count(*)::int AS n FROM ${effects} WHERE migration = 'typed'`)).rows[0].n,
    ).toBe(1)
    await owner.end()
  })

  it('the keel CLI on a Node without type stripping fails a .ts migration with a clear message', async () => {
    const canStrip = (process.features as { typescript?: unknown }).typescript !== undefined
    const run = await runCli(['migrate', 'up', '--tenant', tenants[1]!], {
      cwd: dir,
      env: {
        KEEL_MIGRATE_URL: readStack().primary.ownerUrl,
        KEEL_MIGRATIONS_DIR: dir,
        KEEL_TENANCY_MODE: 'schema',
        KEEL_TENANTS: tenants.join(','),
      },
    })
    if (canStrip) {
      expect(run.code).toBe(0)
    } else {
      expect(run.code).toBe(1)
      expect(run.stdout).toMatch(
        /0005_typed\.ts: Node .* cannot import TypeScript; run keel on Node 22\.18\+/,
      )
    }
  })

  it('keel migrate new --backfill writes a .mjs template that loads (transaction = false, up)', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'keel-new-'))
    const noEnv = { KEEL_MIGRATE_URL: '', DATABASE_URL: '', KEEL_MIGRATIONS_DIR: '', KEEL_TENANCY_MODE: '' }
    const run = await runCli(['migrate', 'new', '--backfill', 'Fill email lower'], { cwd, env: noEnv })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout.trim()).toBe(join('migrations/shared/0001_fill_email_lower.mjs'))
    const mod = await import(pathToFileURL(join(cwd, 'migrations/shared/0001_fill_email_lower.mjs')).href)
    expect(mod.transaction).toBe(false)
    expect(typeof mod.up).toBe('function')
    const plain = await runCli(['migrate', 'new', '--js', 'seed'], { cwd, env: noEnv })
    expect(plain.stdout.trim()).toBe(join('migrations/shared/0002_seed.mjs'))
  })
})
