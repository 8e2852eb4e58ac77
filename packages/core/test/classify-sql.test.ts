import { describe, expect, it } from 'vitest'
import { classifySql, rememberWrite } from '../src/routing/classify-sql.js'
import { decodeToken, encodeToken } from '../src/routing/consistency-token.js'
import { formatLsn, parseLsn } from '../src/routing/lsn.js'

describe('classifySql', () => {
  it.each([
    'SELECT * FROM invoices WHERE id = $1',
    '  select 1',
    '(SELECT 1) UNION (SELECT 2)',
    'WITH t AS (SELECT 1) SELECT * FROM t',
    'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r',
    'TABLE invoices',
    'VALUES (1), (2)',
    'SHOW statement_timeout',
    "SELECT 'INSERT INTO x' AS text_that_looks_like_a_write",
    'SELECT "update" FROM t',
    'SELECT $$ DELETE FROM t $$',
    '-- DELETE FROM t\nSELECT 1',
    '/* UPDATE t /* nested */ SET */ SELECT 1',
    'SELECT update_count, for_share FROM stats',
    'SELECT 1;',
    'SELECT 1;  \n',
  ])('read: %s', (sql) => {
    expect(classifySql(sql)).toBe('read')
  })

  it.each([
    "INSERT INTO t VALUES ('a')",
    'UPDATE t SET a = 1',
    'DELETE FROM t',
    'MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING',
    'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d',
    'WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u',
    'SELECT * FROM t FOR UPDATE',
    'SELECT * FROM t FOR NO KEY UPDATE',
    'SELECT * FROM t FOR SHARE',
    'SELECT * FROM t FOR KEY SHARE SKIP LOCKED',
    "SELECT nextval('s')",
    "SELECT setval('s', 1)",
    'SELECT pg_advisory_lock(1)',
    'SELECT pg_try_advisory_xact_lock(1)',
    "SELECT pg_notify('c', 'x')",
    'SELECT txid_current()',
    'SELECT pg_current_wal_lsn()',
    'SELECT * INTO new_table FROM t',
    'SELECT 1; SELECT 2',
    'SELECT 1; DELETE FROM t',
    'CREATE TABLE x (a int)',
    'EXPLAIN ANALYZE SELECT 1',
    'CALL do_things()',
    'LOCK TABLE t',
    "SELECT 'unterminated",
    'SELECT /* unterminated',
  ])('write (primary): %s', (sql) => {
    expect(classifySql(sql)).toBe('write')
  })

  it('remembers statements a replica refused', () => {
    const sql = 'SELECT my_function_that_writes()'
    expect(classifySql(sql)).toBe('read')
    rememberWrite(sql)
    expect(classifySql(sql)).toBe('write')
  })
})

describe('LSNs and consistency tokens', () => {
  it('parses, compares and prints WAL positions', () => {
    expect(parseLsn('0/0')).toBe(0n)
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n)
    expect(parseLsn('1/0')! > parseLsn('0/FFFFFFFF')!).toBe(true)
    expect(formatLsn(parseLsn('16/B374D848')!)).toBe('16/B374D848')
    for (const bad of [null, undefined, '', 'x/1', '1', '1/2/3', '123456789/0'])
      expect(parseLsn(bad as never)).toBeUndefined()
  })

  it('round-trips a token and refuses anything else without throwing', () => {
    const token = encodeToken({ systemId: '7712849360985737980', timeline: 3 }, 0x16b374d848n)
    expect(decodeToken(token)).toEqual({
      cluster: { systemId: '7712849360985737980', timeline: 3 },
      lsn: 0x16b374d848n,
    })
    for (const garbage of [
      '',
      'k1',
      'k2.1.1.1',
      'k1.x.1.1',
      `${token}x`,
      'k1.1.1.zz',
      'a'.repeat(1000),
      42,
      null,
      {},
    ]) {
      expect(decodeToken(garbage)).toBeUndefined()
    }
  })
})
