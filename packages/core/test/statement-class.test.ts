import { beforeAll, describe, expect, it } from 'vitest'
import { loadParser } from '../src/sql/sql-parser.js'
import { effectWith, type SessionEffect, statementClass } from '../src/sql/statement-class.js'

beforeAll(() => loadParser())

// What each statement shape may leave on a pooled connection, decided from Postgres' own parse tree.
// The regexes this replaced only looked at the first keyword: a leading comment was enough to pass.
const cases: Array<[string, SessionEffect]> = [
  ['SELECT 1', 'plain'],
  ['select count(*), lower(name) from t where id = $1', 'plain'],
  ["WITH x AS (SELECT now()) SELECT jsonb_build_object('a', 1) FROM x", 'plain'],
  ['INSERT INTO t (a) VALUES ($1) RETURNING id', 'plain'],
  ['SET LOCAL statement_timeout = 1000', 'plain'],
  ["SELECT set_config('app.user', $1, true)", 'plain'],
  ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'plain'],
  ['SET CONSTRAINTS ALL DEFERRED', 'plain'],
  ['DECLARE c CURSOR FOR SELECT 1', 'plain'],
  ['CREATE TEMP TABLE s (a int) ON COMMIT DROP', 'plain'],
  ['SELECT pg_advisory_xact_lock(1)', 'plain'],
  ['SELECT pg_catalog.count(*) FROM t', 'plain'],
  ['/* c */ SET default_transaction_read_only = on', 'refuse'],
  ['-- c\n  set search_path = evil', 'refuse'],
  ['RESET ALL', 'refuse'],
  ['RESET statement_timeout', 'refuse'],
  ['SET ROLE keel_owner', 'refuse'],
  ['SET SESSION AUTHORIZATION postgres', 'refuse'],
  ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', 'refuse'],
  ['SET LOCAL keel.outbox_relay = on', 'refuse'],
  ["SELECT set_config('TimeZone', 'Asia/Tokyo', false)", 'refuse'],
  ["SELECT set_config('keel.outbox_relay', 'on', true)", 'refuse'],
  ["SELECT set_config('KEEL.outbox_relay', 'on', true)", 'refuse'],
  ["SELECT pg_catalog.set_config('a.b', 'x', false)", 'refuse'],
  ["SELECT set_config($1, 'x', true)", 'refuse'],
  ["SELECT set_config('a.b', 'x', $1)", 'refuse'],
  ["SELECT 1 FROM (SELECT set_config('TimeZone', 'UTC', 1 = 1)) s", 'refuse'],
  ["UPDATE pg_settings SET setting = 'on' WHERE name = 'x'", 'refuse'],
  ['BEGIN', 'refuse'],
  ['/**/ COMMIT', 'refuse'],
  ['SAVEPOINT a', 'refuse'],
  ["PREPARE TRANSACTION 'x'", 'refuse'],
  ['PREPARE keel_scope_rls_t AS SELECT 1', 'refuse'],
  ['EXECUTE x', 'refuse'],
  ['DEALLOCATE ALL', 'refuse'],
  ['DISCARD ALL', 'refuse'],
  ['LISTEN ch', 'refuse'],
  ['UNLISTEN *', 'refuse'],
  ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'refuse'],
  ["LOAD 'auto_explain'", 'refuse'],
  ['CREATE TEMP TABLE import_staging (a int)', 'retire'],
  ['CREATE TEMPORARY TABLE IF NOT EXISTS s (a int) ON COMMIT DELETE ROWS', 'retire'],
  ['create temp table t as select 1', 'retire'],
  ['SELECT 1 AS a INTO TEMP s', 'retire'],
  ['CREATE TEMP VIEW v AS SELECT 1', 'retire'],
  ['CREATE TEMP SEQUENCE s', 'retire'],
  ['CREATE TABLE pg_temp.invoices (a int)', 'retire'],
  ["CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", 'retire'],
  ['SELECT pg_advisory_lock(42)', 'opaque'],
  ['select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)', 'opaque'],
  ['DO $$ BEGIN PERFORM 1; END $$', 'opaque'],
  ['CALL archive_invoices(1)', 'opaque'],
  ['SELECT my_insert_fn($1)', 'opaque'],
  ['SELECT * FROM t WHERE id IN (SELECT f(x) FROM u)', 'opaque'],
  ['SELECT public.lower(name) FROM t', 'opaque'],
  ['SELECT "Lower"(name) FROM t', 'opaque'],
  ["SELECT query_to_xml('select 1', true, true, '')", 'opaque'],
  ["SELECT * FROM ts_stat('select v from t')", 'opaque'],
  ['SELECT setseed(0.5)', 'opaque'],
  ['SET LOCAL search_path = pg_temp, public', 'opaque'],
  ["SELECT set_config('search_path', 'pg_temp', true)", 'opaque'],
  ['SELEC 1', 'opaque'],
]

describe('statement classes', () => {
  it.each(cases)('%s -> %s', (sql, effect) => {
    expect(statementClass(sql).effect).toBe(effect)
  })

  it('names the unknown functions that make a statement opaque, and only those can be declared safe', () => {
    const safe = new Set(['st_distance', 'billing.total'])
    expect(statementClass('SELECT st_distance(a, b) FROM t').functions).toEqual(['st_distance'])
    expect(effectWith(statementClass('SELECT st_distance(a, b), lower(n) FROM t'), safe)).toBe('plain')
    expect(effectWith(statementClass('SELECT public.st_distance(a, b) FROM t'), safe)).toBe('plain')
    expect(effectWith(statementClass('SELECT billing.total($1)'), safe)).toBe('plain')
    expect(effectWith(statementClass('SELECT other.total($1)'), safe)).toBe('opaque')
    expect(effectWith(statementClass('SELECT st_distance(a, b), my_fn() FROM t'), safe)).toBe('opaque')
    // Opaque for another reason than a call: declaring functions does not change it.
    expect(effectWith(statementClass('DO $$ BEGIN PERFORM st_distance(1, 2); END $$'), safe)).toBe('opaque')
    expect(effectWith(statementClass('SELECT pg_advisory_lock(1)'), new Set())).toBe('opaque')
  })

  it('says what to do instead of a refused statement', () => {
    expect(statementClass('SET search_path = x').refusal).toMatch(/SET LOCAL/)
    expect(statementClass('LISTEN x').refusal).toMatch(/dedicated/)
  })
})
