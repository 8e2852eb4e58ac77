import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { isKeelError, type Keel, type TenantClient } from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { CLEAN, sessionState } from './support/session-state.js'

/**
 * Issue #10 items 1, 2 and 9, each attack reproduced for real: two tenants on a pool of one connection,
 * so globex surely gets the connection acme used. Whatever acme's SQL did, globex's statements must run
 * with globex's scope and see none of acme's session objects.
 */
const table = 'ss_items'

let keel: Keel
let acme: TenantClient
let globex: TenantClient

beforeAll(async () => {
  await createRlsTable(table)
  const owner = await connect('owner')
  try {
    // A function that runs any SQL it is given, as the caller (a realistic "admin helper" an app ships).
    await owner.query(
      `CREATE OR REPLACE FUNCTION ss_run(sql text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE sql; END $$`,
    )
    await owner.query(
      `CREATE OR REPLACE PROCEDURE ss_proc(sql text) LANGUAGE plpgsql AS $$ BEGIN EXECUTE sql; END $$`,
    )
    await owner.query('GRANT EXECUTE ON FUNCTION ss_run(text) TO keel_app')
    await owner.query('GRANT EXECUTE ON PROCEDURE ss_proc(text) TO keel_app')
  } finally {
    await owner.end()
  }
})

afterAll(async () => {
  const owner = await connect('owner')
  try {
    await owner.query('DROP FUNCTION IF EXISTS ss_run(text)')
    await owner.query('DROP PROCEDURE IF EXISTS ss_proc(text)')
  } finally {
    await owner.end()
  }
  await dropTable(table)
})

beforeEach(() => {
  keel = testKeel({ pool: { max: 1 }, applicationName: 'keel-session-state' })
  acme = keel.tenant('acme')
  globex = keel.tenant('globex')
})

afterEach(() => keel.close())

async function refused(call: Promise<unknown>): Promise<string> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(isKeelError(error, 'KEEL_QUERY_INVALID'), String(error)).toBe(true)
  return (error as Error).message
}

describe('item 1: session objects do not outlive a tenant call', () => {
  it("a temp table without ON COMMIT DROP (a CSV import) does not carry acme's staged rows to globex", async () => {
    const importCsv = (db: TenantClient, row: string) =>
      db.transaction(async (tx) => {
        await tx.query('CREATE TEMP TABLE IF NOT EXISTS import_staging (body text)')
        await tx.query('INSERT INTO import_staging (body) VALUES ($1)', [row])
        const staged = await tx.query<{ body: string }>('SELECT body FROM import_staging ORDER BY body')
        await tx.query(`INSERT INTO ${table} (tenant_id, body) SELECT $1, body FROM import_staging`, [
          db.tenantId,
        ])
        return staged.rows.map((r) => r.body)
      })
    expect(await importCsv(acme, 'acme:secret')).toEqual(['acme:secret'])
    expect(await importCsv(globex, 'globex:row')).toEqual(['globex:row'])
    const imported = await globex.query<{ body: string }>(
      `SELECT body FROM ${table} WHERE body LIKE '%:secret' OR body = 'globex:row'`,
    )
    expect(imported.rows.map((r) => r.body)).toEqual(['globex:row'])
  })

  it('a temp table named like a real table does not shadow it for the next tenant', async () => {
    await acme.transaction(async (tx) => {
      await tx.query(`CREATE TEMP TABLE ${table} (tenant_id text, id bigserial, body text, n int)`)
      await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'acme:shadow')`)
    })
    const seen = await globex.query<{ body: string }>(`SELECT body FROM ${table}`)
    expect(seen.rows.map((r) => r.body)).not.toContain('acme:shadow')
    await globex.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'globex:real')`)
    const owner = await connect('super')
    try {
      const real = await owner.query(`SELECT tenant_id FROM public.${table} WHERE body = 'globex:real'`)
      expect(real.rows).toEqual([{ tenant_id: 'globex' }])
    } finally {
      await owner.end()
    }
  })

  it('a cursor WITH HOLD is refused, so globex cannot fetch from it', async () => {
    await acme.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'acme:held')`)
    await refused(
      acme.transaction((tx) => tx.query(`DECLARE held CURSOR WITH HOLD FOR SELECT body FROM ${table}`)),
    )
    const fetched = await globex
      .transaction((tx) => tx.query<{ body: string }>('FETCH ALL FROM held'))
      .then(
        (r) => r.rows.map((row) => row.body),
        (e: { code?: string }) => e.code,
      )
    expect(fetched).toBe('34000')
  })

  it('LISTEN is refused, and the connection listens to nothing afterwards', async () => {
    expect(await refused(acme.query('LISTEN acme_events'))).toMatch(/dedicated pg.Client/)
    await refused(acme.query('/* x */ listen "acme_events"'))
    expect(await sessionState(globex)).toEqual(CLEAN)
  })

  it('SQL PREPARE is refused, so globex cannot EXECUTE acme statements', async () => {
    await refused(acme.query(`PREPARE acme_rows AS SELECT body FROM ${table}`))
    const run = await globex.query('EXECUTE acme_rows').then(
      () => 'ran',
      (e: unknown) => (isKeelError(e) ? e.code : (e as { code?: string }).code),
    )
    expect(run).toBe('KEEL_QUERY_INVALID')
    expect(await sessionState(globex)).toEqual(CLEAN)
  })

  it('a session advisory lock is released with the call: another connection can take it', async () => {
    const got = await acme.query<{ ok: boolean }>('SELECT pg_advisory_lock(4242) IS NOT NULL AS ok')
    expect(got.rows[0]?.ok).toBe(true)
    const su = await connect('super')
    try {
      const r = await su.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(4242) AS ok')
      expect(r.rows[0]?.ok).toBe(true)
      await su.query('SELECT pg_advisory_unlock(4242)')
    } finally {
      await su.end()
    }
    expect(await sessionState(globex)).toEqual(CLEAN)
  })
})

describe("item 2: keel's own named statements cannot be replaced from tenant SQL", () => {
  it("a DO block that DEALLOCATEs keel's scope statement and PREPAREs its own does not scope globex as acme", async () => {
    await acme.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'acme:private')`)
    // Make sure keel's scope statement exists on the connection, then replace it. Its name is a hash of
    // its text, which pg_prepared_statements shows: the DO block finds it there (and fails if it
    // is not, so this attack is real).
    await acme.query('SELECT 1')
    await acme.query(
      `DO $$ DECLARE r record; BEGIN
         FOR r IN SELECT name FROM pg_prepared_statements
                  WHERE statement = 'SELECT set_config($1, $2, true), set_config($3, $4, true)' LOOP
           EXECUTE format('DEALLOCATE %I', r.name);
           EXECUTE format('PREPARE %I(text, text, text, text) AS SELECT set_config($1, %L, true), set_config($3, $4, true)', r.name, 'acme');
         END LOOP;
         IF NOT FOUND THEN RAISE EXCEPTION 'keel scope statement not on this connection'; END IF;
       END $$`,
    )
    const seen = await globex.query<{ tenant: string; bodies: string[] | null }>(
      `SELECT current_setting('app.tenant_id') AS tenant, (SELECT array_agg(body) FROM ${table}) AS bodies`,
    )
    expect(seen.rows[0]?.tenant).toBe('globex')
    expect(seen.rows[0]?.bodies ?? []).not.toContain('acme:private')
  })

  it('a DO block that only DEALLOCATEs keel statements does not break the next tenant', async () => {
    await acme.query('SELECT 1')
    await acme.query(`DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$`).catch(() => undefined)
    expect(await sessionState(globex)).toEqual(CLEAN)
  })

  it("a plain PREPARE under keel's name is refused and the next tenant runs with its own scope", async () => {
    await refused(acme.query(`PREPARE keel_scope_rls(text, text) AS SELECT set_config($1, 'acme', true)`))
    const r = await globex.query<{ tenant: string }>(
      `SELECT current_setting('app.tenant_id') AS tenant`,
      [],
      { statementTimeoutMs: 0 },
    )
    expect(r.rows[0]?.tenant).toBe('globex')
  })
})

describe('item 9: session settings do not survive', () => {
  it('a SET behind a comment is refused: later writes do not fail read-only', async () => {
    await refused(acme.query('/* c */ SET default_transaction_read_only = on'))
    await globex.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'globex:w')`)
    expect(await sessionState(globex)).toEqual(CLEAN)
  })

  it("set_config(..., false) is refused: globex keeps the server's TimeZone", async () => {
    const before = await globex.query<{ tz: string }>(`SELECT current_setting('TimeZone') AS tz`)
    await refused(acme.query(`SELECT set_config('TimeZone', 'Asia/Tokyo', false)`))
    const after = await globex.query<{ tz: string }>(`SELECT current_setting('TimeZone') AS tz`)
    expect(after.rows[0]?.tz).toBe(before.rows[0]?.tz)
  })

  it('a DO block setting search_path does not carry over to the next tenant', async () => {
    await acme.query(`DO $$ BEGIN SET search_path = pg_catalog; END $$`)
    const r = await globex.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`)
    expect(r.rows[0]?.n).toMatch(/^\d+$/)
    expect(await sessionState(globex)).toEqual(CLEAN)
  })

  it("keel's reserved settings cannot be set: globex never reads as the outbox relay", async () => {
    await refused(acme.query(`SELECT set_config('keel.outbox_relay', 'on', false)`))
    await refused(acme.query(`SELECT set_config('keel.outbox_relay', 'on', true)`))
    await refused(acme.query('SET LOCAL keel.outbox_relay = on'))
    await acme
      .query(`DO $$ BEGIN PERFORM set_config('keel.outbox_relay', 'on', false); END $$`)
      .catch(() => undefined)
    expect(await sessionState(globex)).toEqual(CLEAN)
  })
})

describe('postgres.safeFunctions: functions the app declares harmless stay on the plain path', () => {
  // ss_run runs the SQL it is given: here it leaves a session-level setting behind, which is exactly
  // what a function listed in safeFunctions must not do. Declared or not shows which path it took.
  const leave = `SELECT ss_run($$SELECT set_config('app.left_behind', 'acme', false)$$)`
  const leftBehind = async (db: TenantClient) =>
    (await db.query<{ v: string | null }>(`SELECT current_setting('app.left_behind', true) AS v`)).rows[0]?.v

  it('undeclared, a user function is probed: its session setting is reset before the next tenant', async () => {
    await acme.query(leave)
    expect(await leftBehind(globex)).not.toBe('acme')
  })

  it('declared safe, it runs plain: nothing resets what it left (the claim is the app’s to keep)', async () => {
    const trusting = testKeel({
      pool: { max: 1 },
      applicationName: 'keel-safe-fns',
      safeFunctions: ['ss_run'],
    })
    try {
      await trusting.tenant('acme').query(leave)
      expect(await leftBehind(trusting.tenant('globex'))).toBe('acme')
    } finally {
      await trusting.close()
    }
  })

  it('builtins that change the session cannot be declared safe', () => {
    for (const name of ['pg_advisory_lock', 'pg_catalog.set_config', 'query_to_xml']) {
      expect(() => testKeel({ safeFunctions: [name] })).toThrow(
        expect.objectContaining({ code: 'KEEL_CONFIG_INVALID' }),
      )
    }
  })
})
