import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { statementName } from '../src/pool/statement-cache.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'

const table = 'cache_items'
beforeAll(() => createRlsTable(table))
afterAll(() => dropTable(table))

const prepared = (keel: Keel) =>
  keel
    .tenant('acme')
    .query<{ name: string; statement: string }>(
      'SELECT name, statement FROM pg_prepared_statements ORDER BY name',
    )
    .then((r) => r.rows)

describe('statement cache', () => {
  it('prepares a repeated statement once per connection, scope prelude included', async () => {
    const keel = testKeel({ pool: { max: 1 } })
    try {
      for (let i = 0; i < 5; i++)
        await keel.tenant(`t${i}`).query(`SELECT count(*) FROM ${table} WHERE n > $1`, [i])
      const rows = await prepared(keel)
      const mine = rows.filter((r) => r.statement === `SELECT count(*) FROM ${table} WHERE n > $1`)
      expect(mine).toHaveLength(1)
      expect(rows.some((r) => r.statement.startsWith('SELECT set_config('))).toBe(true)
    } finally {
      await keel.close()
    }
  })

  it('names a statement after its text: the same name on every connection, never another text (ADR 0023)', async () => {
    const a = testKeel({ pool: { max: 1 } })
    const b = testKeel({ pool: { max: 1 } })
    try {
      const texts = [
        `SELECT count(*) FROM ${table} WHERE n > $1`,
        `SELECT count(*) FROM ${table} WHERE n < $1`,
      ]
      // Opposite orders: a per-connection counter would give each text a different name on each.
      for (const text of texts) await a.tenant('acme').query(text, [1])
      for (const text of [...texts].reverse()) await b.tenant('acme').query(text, [1])
      const onA = await prepared(a)
      const onB = await prepared(b)
      for (const text of texts) {
        const name = statementName(text)
        expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63)
        expect(onA.find((r) => r.statement === text)?.name).toBe(name)
        expect(onB.find((r) => r.statement === text)?.name).toBe(name)
      }
      // keel's own statements (the scope, BEGIN, COMMIT, WAL positions) are named after their text too.
      for (const row of [...onA, ...onB]) expect(row.name).toBe(statementName(row.statement))
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('closes evicted statements on the server (bounded per connection)', async () => {
    const small = testKeelWithCache(2)
    try {
      for (let i = 0; i < 10; i++) await small.tenant('acme').query(`SELECT ${i} AS v`)
      const rows = (await prepared(small)).filter((r) => !r.statement.startsWith('SELECT set_config('))
      // The two most recent plus the probe itself, which is being prepared as it runs.
      expect(rows.length).toBeLessThanOrEqual(3)
      expect(rows.map((r) => r.statement)).toContain('SELECT 9 AS v')
    } finally {
      await small.close()
    }
  })

  it('re-prepares transparently when DDL changes the result shape under a cached plan', async () => {
    const keel = testKeel({ pool: { max: 1 } })
    try {
      const db = keel.tenant('acme')
      await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'x')`)
      const before = await db.query(`SELECT * FROM ${table} LIMIT 1`)
      const owner = await connect('owner')
      await owner.query(`ALTER TABLE ${table} ADD COLUMN extra int NOT NULL DEFAULT 7`)
      await owner.end()
      const after = await db.query<{ extra: number }>(`SELECT * FROM ${table} LIMIT 1`)
      expect(Object.keys(before.rows[0]!)).not.toContain('extra')
      expect(after.rows[0]?.extra).toBe(7)
    } finally {
      await keel.close()
    }
  })

  it('a statement that fails to parse is not remembered as prepared', async () => {
    const keel = testKeel({ pool: { max: 1 } })
    try {
      for (let i = 0; i < 3; i++) {
        await expect(keel.tenant('acme').query('SELEC 1')).rejects.toMatchObject({ code: '42601' })
      }
      // First statement on a fresh connection: the scope prelude is parsed in the same batch.
      const fresh = testKeel({ pool: { max: 1 } })
      await expect(fresh.tenant('acme').query(`SELECT nope FROM ${table}`)).rejects.toMatchObject({
        code: '42703',
      })
      await expect(fresh.tenant('acme').query(`SELECT nope FROM ${table}`)).rejects.toMatchObject({
        code: '42703',
      })
      await fresh.close()
    } finally {
      await keel.close()
    }
  })

  it('statementCacheSize 0 leaves no prepared statement on the server', async () => {
    const keel = testKeelWithCache(0)
    try {
      for (let i = 0; i < 3; i++) await keel.tenant('acme').query(`SELECT count(*) FROM ${table}`)
      await keel.tenant('acme').transaction((tx) => tx.query(`SELECT count(*) FROM ${table}`))
      expect(await prepared(keel)).toEqual([])
    } finally {
      await keel.close()
    }
  })
})

function testKeelWithCache(size: number): Keel {
  return testKeel({ pool: { max: 1 }, statementCacheSize: size })
}
