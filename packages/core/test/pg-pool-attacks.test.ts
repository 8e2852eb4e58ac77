import type pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { stackCtl } from './support/stack.js'

// The pg.Pool facade (ADR 0031) attacked the way issue #10 attacked db.query: a hostile tenant's SQL
// through pool.query() and through a lent client inside a transaction, a host that stops answering in the
// middle of an ORM transaction, and keel.close() while an ORM transaction is open.
const table = 'pg_pool_attack_items'
type Client = {
  query(text: string, values?: unknown[]): Promise<pg.QueryResult>
  release(error?: unknown): void
}
const connectClient = (pool: pg.Pool) => pool.connect() as unknown as Promise<Client>
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ran',
    (e: { code?: string }) => e.code ?? 'error',
  )

beforeAll(() => createRlsTable(table))
afterAll(() => dropTable(table))

describe("a hostile tenant's SQL through the facade", () => {
  // One connection: whatever a statement leaves on it, the next tenant's statement meets.
  const keel = testKeel({ pool: { max: 1 } })
  afterAll(() => keel.close())

  // Refused where the parser sees the session change; run, then probed or retired (ADR 0022), where it
  // cannot (a DO block, a temp table).
  const HOSTILE: Record<string, 'KEEL_QUERY_INVALID' | 'ran'> = {
    'PREPARE evil AS SELECT 1': 'KEEL_QUERY_INVALID',
    'DEALLOCATE ALL': 'KEEL_QUERY_INVALID',
    "SELECT set_config('app.tenant_id', 'acme', false)": 'KEEL_QUERY_INVALID',
    "SET app.tenant_id = 'acme'": 'KEEL_QUERY_INVALID',
    "DO $$ BEGIN PERFORM set_config('app.tenant_id', 'acme', false); END $$": 'ran',
    "DO $$ BEGIN EXECUTE 'PREPARE evil2 AS SELECT 1'; END $$": 'ran',
    'CREATE TEMP TABLE evil_tmp (x int)': 'ran',
  }
  const CLEAN = { tenant: 'globex', prepared: 0, visible: 0, temp_table: false }

  /** What the next statement of another tenant sees on the (only) connection. */
  async function leftovers(keel: Keel) {
    const r = await keel
      .tenant('globex')
      .pgPool()
      .query(
        `SELECT current_setting('app.tenant_id', true) AS tenant,
              (SELECT count(*)::int FROM pg_prepared_statements WHERE from_sql) AS prepared,
              (SELECT count(*)::int FROM ${table}) AS visible,
              to_regclass('pg_temp.evil_tmp') IS NOT NULL AS temp_table`,
      )
    return r.rows[0]
  }

  it('pool.query(): each statement is refused or leaves nothing for the next tenant', async () => {
    const acme = keel.tenant('acme').pgPool()
    await acme.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'a')`)
    for (const [sql, expected] of Object.entries(HOSTILE)) {
      expect(await outcome(acme.query(sql)), sql).toBe(expected)
      expect(await leftovers(keel), sql).toEqual(CLEAN)
    }
  })

  it('a lent client inside a transaction: each statement is refused or leaves nothing after the transaction', async () => {
    for (const [sql, expected] of Object.entries(HOSTILE)) {
      const client = await connectClient(keel.tenant('acme').pgPool())
      await client.query('BEGIN')
      expect(await outcome(client.query(sql)), sql).toBe(expected)
      await outcome(client.query('COMMIT'))
      client.release()
      expect(await leftovers(keel), sql).toEqual(CLEAN)
    }
  })
})

describe('a host that stops answering in the middle of an ORM transaction', () => {
  let keel: Keel | undefined
  let paused = false
  afterEach(async () => {
    if (paused) await stackCtl('resume', 'primary')
    paused = false
    await keel?.close()
  })

  it('the statement ends with a KeelError on the client side, release() never hangs, the pool works after SIGCONT', async () => {
    keel = testKeel({ pool: { max: 1 }, timeoutGraceMs: 300, limits: { statementTimeoutMs: 500 } })
    const pool = keel.tenant('acme').pgPool()
    const client = await connectClient(pool)
    await client.query('BEGIN')
    await client.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'frozen')`)
    await stackCtl('pause', 'primary')
    paused = true
    const code = await outcome(client.query('SELECT pg_sleep(0)'))
    expect(code).toBe('KEEL_QUERY_TIMEOUT')
    client.release()
    await stackCtl('resume', 'primary')
    paused = false
    // The frozen transaction's connection was retired: its insert never committed, the next call works.
    const r = await pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE body = 'frozen'`)
    expect(r.rows[0]).toEqual({ n: 0 })
  })
})

describe('keel.close() while an ORM transaction is open', () => {
  it('the open transaction finishes (accepted work), then every call is KEEL_CLOSED', async () => {
    const keel = testKeel({ pool: { max: 2 } })
    const pool = keel.tenant('acme').pgPool()
    const client = await connectClient(pool)
    await client.query('BEGIN')
    await client.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'during-close')`)
    const closing = keel.close()
    await client.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'during-close')`)
    expect((await client.query('COMMIT')).command).toBe('COMMIT')
    client.release()
    await closing
    expect(await outcome(pool.query('SELECT 1'))).toBe('KEEL_CLOSED')
    expect(await outcome(connectClient(pool).then((c) => c.query('SELECT 1')))).toBe('KEEL_CLOSED')
    const check = testKeel()
    try {
      const r = await check
        .tenant('acme')
        .query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE body = 'during-close'`)
      expect(r.rows[0]).toEqual({ n: 2 })
    } finally {
      await check.close()
    }
  })
})
