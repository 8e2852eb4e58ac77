import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  connect,
  dropFleet,
  migrationsDir,
  readStack,
  runCli,
  sleep,
  uniquePrefix,
  until,
} from './support.js'

// `keel migrate up` over 120 tenant schemas, SIGKILLed mid-fleet, then again while a CREATE INDEX
// CONCURRENTLY runs (its backend terminated too, leaving the index INVALID), then rerun: every tenant
// fully migrated, no migration applied twice, no INVALID index left, the one bad tenant reported alone.
const prefix = uniquePrefix('r')
const ids = Array.from({ length: 120 }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`)
const slow = `${prefix}slow`
const bad = `${prefix}bad`
const fleet = [...ids, bad, slow]
const schemas = fleet.map((id) => `tenant_${id}`)
const effects = `${prefix}_effects`
const slowFn = `${prefix}_slow_v`

const files = {
  'tenant/0001_items.sql': `CREATE TABLE items (id bigserial PRIMARY KEY, v int NOT NULL);
    INSERT INTO items (v) SELECT generate_series(1, 2000);
    INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0001');`,
  'tenant/0002_items_w.sql': `ALTER TABLE items ADD COLUMN w int;
    INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0002');`,
  // Slow only in the slow tenant's schema (1 ms a row), so a kill can land in the middle of its build.
  'tenant/0003_items_v_idx.sql': `CREATE INDEX CONCURRENTLY items_v_idx ON items ((public.${slowFn}(v)));`,
  'tenant/0004_after.sql': `CREATE TABLE after_idx (id int);
    INSERT INTO public.${effects} (scope, migration) VALUES (current_schema(), '0004');`,
}

let dir: string
let env: NodeJS.ProcessEnv

const ledgerRows = async () => {
  const owner = await connect('owner')
  try {
    const r = await owner.query(
      'SELECT count(*)::int AS n FROM keel_migrate.ledger WHERE scope = ANY($1::text[])',
      [schemas.map((s) => `schema:${s}`)],
    )
    return r.rows[0].n as number
  } finally {
    await owner.end()
  }
}

beforeAll(async () => {
  dir = migrationsDir(files)
  const owner = await connect('owner')
  await owner.query(`CREATE TABLE ${effects} (scope text, migration text)`)
  await owner.query(`CREATE FUNCTION ${slowFn}(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN IF current_schema() = 'tenant_${slow}' THEN PERFORM pg_sleep(0.001); END IF; RETURN v; END $$`)
  for (const s of schemas) await owner.query(`CREATE SCHEMA "${s}"`)
  // The bad tenant's schema already has the table 0004 creates: its 0004 fails, nobody else's.
  await owner.query(`CREATE TABLE "tenant_${bad}".after_idx (id int)`)
  await owner.end()
  env = {
    KEEL_MIGRATE_URL: readStack().primary.ownerUrl,
    KEEL_MIGRATIONS_DIR: dir,
    KEEL_TENANCY_MODE: 'schema',
    KEEL_TENANTS: fleet.join(','),
    KEEL_MIGRATE_CONCURRENCY: '4',
  }
})

afterAll(async () => {
  await dropFleet(schemas)
  const owner = await connect('owner')
  await owner.query(`DROP TABLE IF EXISTS ${effects}`)
  await owner.query(`DROP FUNCTION IF EXISTS ${slowFn}(int)`)
  await owner.query('DELETE FROM keel_migrate.progress WHERE scope = ANY($1::text[])', [
    schemas.map((s) => `schema:${s}`),
  ])
  await owner.query('DELETE FROM keel_migrate.failure WHERE scope = ANY($1::text[])', [
    schemas.map((s) => `schema:${s}`),
  ])
  await owner.end()
})

describe('keel migrate up, SIGKILLed and rerun', () => {
  it('resumes after a SIGKILL mid-fleet and after one during a concurrent index build', async () => {
    // 1. Killed somewhere in the middle of the fleet.
    const first = await runCli(['migrate', 'up'], {
      cwd: dir,
      env,
      onStart: (child) => {
        void until(async () => (await ledgerRows()) >= 100, 20).then(() => child.kill('SIGKILL'))
      },
    })
    expect(first.signal).toBe('SIGKILL')
    const afterKill = await ledgerRows()
    expect(afterKill).toBeGreaterThanOrEqual(100)
    expect(afterKill).toBeLessThan(fleet.length * 4 - 1)

    // 2. Killed while the slow tenant's CREATE INDEX CONCURRENTLY runs; its backend dies too (a runner
    // killed with its server session, or a failover), so the index stays INVALID.
    const watcher = await connect('owner')
    const second = await runCli(['migrate', 'up', '--tenant', slow], {
      cwd: dir,
      env,
      onStart: (child) => {
        void until(async () => {
          const r = await watcher.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'keel-migrate' AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND state = 'active' AND query_start < clock_timestamp() - interval '300 ms'",
          )
          if (r.rows.length === 0) return false
          child.kill('SIGKILL')
          for (const row of r.rows) await watcher.query('SELECT pg_terminate_backend($1)', [row.pid])
          return true
        }, 20)
      },
    })
    expect(second.signal).toBe('SIGKILL')
    await until(async () => {
      const r = await watcher.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'keel-migrate'",
      )
      return r.rows[0].n === 0
    })
    const invalid = await watcher.query(
      `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE NOT i.indisvalid AND n.nspname = $1`,
      [`tenant_${slow}`],
    )
    expect(invalid.rows.map((r) => r.relname)).toEqual(['items_v_idx'])

    // 3. Rerun: everything finishes, the INVALID index is found and rebuilt, the bad tenant is reported alone.
    const third = await runCli(['migrate', 'up'], { cwd: dir, env })
    expect(third.code).toBe(1)
    expect(third.stdout).toContain(`INVALID index "tenant_${slow}"."items_v_idx" dropped`)
    expect(third.stdout).toMatch(/FAILED: .* 1 failed, 0 skipped/)
    expect(third.stdout).toContain(`✗ tenant ${bad} 0004_after`)

    const perTenant = await watcher.query(
      'SELECT scope, count(*)::int AS n FROM keel_migrate.ledger WHERE scope = ANY($1::text[]) GROUP BY 1',
      [schemas.map((s) => `schema:${s}`)],
    )
    const counts = new Map(perTenant.rows.map((r) => [r.scope as string, r.n as number]))
    for (const id of [...ids, slow]) expect(counts.get(`schema:tenant_${id}`)).toBe(4)
    expect(counts.get(`schema:tenant_${bad}`)).toBe(3)
    const twice = await watcher.query(
      `SELECT scope, migration, count(*)::int AS n FROM ${effects} GROUP BY 1, 2 HAVING count(*) > 1`,
    )
    expect(twice.rows).toEqual([])
    const total = await watcher.query(`SELECT count(*)::int AS n FROM ${effects}`)
    expect(total.rows[0].n).toBe((ids.length + 1) * 3 + 2)
    const stillInvalid = await watcher.query(
      `SELECT count(*)::int AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE NOT i.indisvalid AND n.nspname = ANY($1::text[])`,
      [schemas],
    )
    expect(stillInvalid.rows[0].n).toBe(0)
    const progress = await watcher.query(
      'SELECT count(*)::int AS n FROM keel_migrate.progress WHERE scope = ANY($1::text[])',
      [schemas.map((s) => `schema:${s}`)],
    )
    expect(progress.rows[0].n).toBe(0)

    // status: everyone ok but the bad tenant, which shows its failure.
    const status = await runCli(['migrate', 'status', '--json'], { cwd: dir, env })
    const rows = JSON.parse(status.stdout) as Array<{ tenant: string | null; state: string }>
    expect(rows.filter((r) => r.state !== 'ok')).toEqual([
      expect.objectContaining({ tenant: bad, state: 'failed' }),
    ])
    expect(status.code).toBe(1)
    await watcher.end()
    await sleep(0)
  })
})
