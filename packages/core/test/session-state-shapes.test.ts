import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { CLEAN, sessionState } from './support/session-state.js'
import { waitFor } from './support/wait.js'

/**
 * The class, not the instances: many statement shapes (comments, CTEs, nested calls, DO, CALL, quoted
 * identifiers, any case) each try to leave something on the connection. Whatever each one does (runs,
 * fails, is refused), the next tenant on that connection must find it clean. Pool of one connection.
 */
const table = 'shape_items'

const shapes: Array<[string, unknown[]]> = [
  [`/* c */ DO $$ BEGIN PERFORM set_config('TimeZone', 'Asia/Tokyo', false); END $$`, []],
  ['do $x$ begin set search_path = pg_catalog; end $x$', []],
  [`DO $$ BEGIN EXECUTE 'CREATE TEMP TABLE sneaky (a int)'; END $$`, []],
  [`DO $$ BEGIN EXECUTE 'CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS ''SELECT 1'''; END $$`, []],
  [`DO $$ BEGIN EXECUTE 'PREPARE sneaky AS SELECT 1'; END $$`, []],
  [`DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$`, []],
  [`DO $$ BEGIN LISTEN sneaky; END $$`, []],
  ['DO $$ BEGIN PERFORM pg_advisory_lock(77); END $$', []],
  [
    `DO $$ BEGIN PERFORM set_config('keel.outbox_relay', 'on', false); PERFORM set_config('app.leak', 'acme', false); END $$`,
    [],
  ],
  [`DO $$ BEGIN PERFORM set_config('app.tenant_id', 'acme', false); END $$`, []],
  [`DO $$ BEGIN PERFORM 1/0; END $$`, []],
  [`SELECT shape_run('SET TimeZone = ''Asia/Tokyo''')`, []],
  ['select "shape_run"($1)', ['CREATE TEMP TABLE t2 (a int)']],
  [`WITH x AS (SELECT shape_run('PREPARE p2 AS SELECT 1') AS r) SELECT * FROM x`, []],
  [`SELECT g FROM generate_series(1, 2) g WHERE shape_run('LISTEN chan2') IS NULL`, []],
  [`SELECT count(*) FROM ${table} WHERE shape_run('SELECT pg_advisory_lock_shared(5)') IS NULL`, []],
  [`CALL shape_proc('SELECT pg_advisory_lock(78)')`, []],
  ['call "public"."shape_proc"($1)', ['CREATE TEMP TABLE t3 AS SELECT 1']],
  [`SELECT shape_run('DECLARE hc CURSOR WITH HOLD FOR SELECT 1')`, []],
  [`EXPLAIN ANALYZE SELECT shape_run('SET work_mem = ''64MB''')`, []],
  [`SELECT query_to_xml('select shape_run(''LISTEN c4'')', true, true, '')`, []],
  [`SELECT shape_run('SET ROLE keel_owner')`, []],
  [`SELECT shape_run('SELECT set_config(''keel.outbox_relay'', ''on'', false)') -- trailing`, []],
  ['CREATE TEMP TABLE t4 (a int)', []],
  ['SELECT 1 AS a INTO TEMP t5', []],
  ['CREATE TEMP VIEW v6 AS SELECT 1 AS a', []],
  ['SELECT pg_try_advisory_lock(79)', []],
  ['/* c */ SET default_transaction_read_only = on', []],
  ['RESET ALL', []],
  ['set session authorization default', []],
  [`SELECT set_config('TimeZone', 'UTC', false)`, []],
  [`UPDATE pg_settings SET setting = 'off' WHERE name = 'enable_seqscan'`, []],
  ['PREPARE keel_scope_rls AS SELECT 1', []],
  ['DISCARD ALL', []],
  ['DECLARE hc2 CURSOR WITH HOLD FOR SELECT 1', []],
  ['SELEC syntax error', []],
]

let keel: Keel
let onReplica: Keel

beforeAll(async () => {
  await createRlsTable(table)
  const owner = await connect('owner')
  try {
    await owner.query(
      `CREATE OR REPLACE FUNCTION shape_run(sql text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE sql; END $$`,
    )
    await owner.query(
      `CREATE OR REPLACE PROCEDURE shape_proc(sql text) LANGUAGE plpgsql AS $$ BEGIN EXECUTE sql; END $$`,
    )
  } finally {
    await owner.end()
  }
  keel = testKeel({ pool: { max: 1 }, applicationName: 'keel-session-shapes' })
  await awaitOnReplicas(table)
  await awaitOnReplicas('shape_run', 'to_regproc')
  onReplica = testKeel({ pool: { max: 1 }, replicas: ['replica1'], maxReplicaLagMs: 60_000 })
  await waitFor('replica1 in rotation', async () =>
    (await onReplica.health()).replicas.every((r) => r.inRotation),
  )
})

afterAll(async () => {
  await keel?.close()
  await onReplica?.close()
  const owner = await connect('owner')
  try {
    await owner.query('DROP FUNCTION IF EXISTS shape_run(text)')
    await owner.query('DROP PROCEDURE IF EXISTS shape_proc(text)')
  } finally {
    await owner.end()
  }
  await dropTable(table)
})

describe('whatever a statement does, the next tenant on its connection finds it clean', () => {
  it.each(shapes)('db.query: %s', async (sql, values) => {
    await keel
      .tenant('acme')
      .query(sql, values)
      .catch(() => undefined)
    expect(await sessionState(keel.tenant('globex'))).toEqual(CLEAN)
  })

  it.each(shapes)('inside db.transaction: %s', async (sql, values) => {
    await keel
      .tenant('acme')
      .transaction((tx) => tx.query(sql, values))
      .catch(() => undefined)
    expect(await sessionState(keel.tenant('globex'))).toEqual(CLEAN)
  })

  // Reads that call a function go to a replica like any read: the same batch guards that connection.
  it.each([
    `SELECT shape_run('PREPARE p9 AS SELECT 1'), pg_is_in_recovery() AS r`,
    `SELECT shape_run('SET TimeZone = ''Asia/Tokyo'''), pg_is_in_recovery() AS r`,
    `SELECT shape_run('SELECT pg_advisory_lock(80)'), pg_is_in_recovery() AS r`,
    `SELECT (SELECT count(*) FROM ${table} WHERE shape_run('SELECT set_config(''app.leak'', ''acme'', false)') IS NULL) AS n, pg_is_in_recovery() AS r`,
    `SELECT shape_run('DEALLOCATE ALL'), pg_is_in_recovery() AS r`,
  ])('on a replica: %s', async (sql) => {
    const acme = onReplica.tenant('acme')
    // DEALLOCATE ALL takes keel's own COMMIT with it: that call fails (acme's own), and only acme's.
    const ran = await acme.query<{ r: boolean }>(sql).catch(() => undefined)
    if (!sql.includes('DEALLOCATE')) expect(ran?.rows[0]?.r).toBe(true)
    const state = await sessionState(onReplica.tenant('globex'))
    expect(state).toEqual(CLEAN)
  })

  it('an opaque statement that leaves nothing keeps its connection; one that leaves state does not', async () => {
    const pid = async () =>
      (await keel.tenant('globex').query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    const first = await pid()
    await keel.tenant('acme').query(`SELECT shape_run('SELECT 1')`)
    expect(await pid()).toBe(first)
    await keel.tenant('acme').query(`SELECT shape_run('LISTEN kept')`)
    expect(await pid()).not.toBe(first)
  })
})
