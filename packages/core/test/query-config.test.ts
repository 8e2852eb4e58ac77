import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest'
import { isKeelError } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'

// pg's QueryConfig in db.query / tx.query / keel.current().query (issue #12, ADR 0031).
const table = 'query_config_items'
const keel = testKeel({ replicas: ['replica1'], maxReplicaLagMs: 60_000 })
const DATE = 1082
const run = randomBytes(4).toString('hex')

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  const db = keel.tenant('acme')
  await db.query(`INSERT INTO ${table} (tenant_id, body, n) VALUES ('acme', $1, 1), ('acme', $2, 2)`, [
    `a-${run}`,
    `b-${run}`,
  ])
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

describe('QueryConfig', () => {
  it("rowMode 'array' gives pg's array rows: columns with the same name all survive", async () => {
    const db = keel.tenant('acme')
    for (const options of [undefined, { route: 'primary' as const }, { consistency: 'eventual' as const }]) {
      const r = await db.query(
        {
          text: `SELECT x.body, y.body, x.n, y.n FROM ${table} x JOIN ${table} y ON y.n = x.n + 1 WHERE x.body = $1`,
          values: [`a-${run}`],
          rowMode: 'array',
        },
        undefined,
        options,
      )
      expect(r.rows).toEqual([[`a-${run}`, `b-${run}`, 1, 2]])
      expect(r.fields.map((f) => f.name)).toEqual(['body', 'body', 'n', 'n'])
      expect(r.fields[2]!.dataTypeID).toBe(23)
      expect(r.command).toBe('SELECT')
    }
    // The same text in object mode collapses them, as pg does: the array mode is not emulated.
    const objects = await db.query({ text: 'SELECT 1 AS a, 2 AS a' })
    expect(objects.rows).toEqual([{ a: 2 }])
    const arrays = await db.query<[number, number]>({ text: 'SELECT 1 AS a, 2 AS a', rowMode: 'array' })
    expect(arrays.rows).toEqual([[1, 2]])
    // Typed as pg types it: rowMode 'array' rows are arrays; fields are pg's FieldDef.
    expectTypeOf(arrays.rows).toEqualTypeOf<[number, number][]>()
    expectTypeOf(objects.rows).toEqualTypeOf<Record<string, unknown>[]>()
    expectTypeOf(arrays.fields[0]!.tableID).toEqualTypeOf<number>()
    const untyped = await db.query({ text: 'SELECT 1', rowMode: 'array' })
    expectTypeOf(untyped.rows).toEqualTypeOf<unknown[][]>()
    // Object rows asked of an array query do not type-check (they would be arrays at run time).
    // @ts-expect-error rowMode 'array' rows are tuples, not { a: number }
    await db.query<{ a: number }>({ text: 'SELECT 1 AS a', rowMode: 'array' })
  })

  it('works in tx.query and keel.current().query, and values as the second argument win (as in pg)', async () => {
    const db = keel.tenant('acme')
    const rows = await db.transaction(async (tx) => {
      const a = await tx.query({ text: 'SELECT $1::int AS a, $1::int AS a', values: [7], rowMode: 'array' })
      const b = await keel.run(db, () =>
        keel.current().query({ text: 'SELECT $1::text AS v', values: ['config'] }, ['second']),
      )
      return [a.rows, b.rows]
    })
    expect(rows).toEqual([[[7, 7]], [{ v: 'second' }]])
  })

  it('scopes a QueryConfig like text: only the tenant’s rows, and another tenant’s insert is refused', async () => {
    const other = keel.tenant('globex')
    const seen = await other.query({ text: `SELECT count(*)::int AS n FROM ${table}`, rowMode: 'array' })
    expect(seen.rows).toEqual([[0]])
    await expect(
      other.query({ text: `INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'x')` }),
    ).rejects.toMatchObject({ code: '42501' })
  })

  it('honours per-query types', async () => {
    const db = keel.tenant('acme')
    const types = {
      getTypeParser: (oid: number, format?: 'text' | 'binary') =>
        oid === DATE ? (v: string) => `per-query:${v}` : pg.types.getTypeParser(oid, format ?? 'text'),
    }
    for (const options of [undefined, { route: 'primary' as const }]) {
      const r = await db.query(
        { text: `SELECT '2024-01-02'::date AS d, 5::int AS i`, types },
        undefined,
        options,
      )
      expect(r.rows).toEqual([{ d: 'per-query:2024-01-02', i: 5 }])
    }
    const inTx = await db.transaction((tx) => tx.query({ text: `SELECT '2024-01-03'::date AS d`, types }))
    expect(inTx.rows).toEqual([{ d: 'per-query:2024-01-03' }])
  })

  it("honours the app's global pg.types.setTypeParser (and pg's own date parsing otherwise)", async () => {
    const db = keel.tenant('acme')
    const text = `SELECT '2024-01-02'::date AS d, '2024-01-02 03:04:05'::timestamp AS ts, '2024-01-02 03:04:05+00'::timestamptz AS tz`
    const raw = await connect('app')
    try {
      // Without a global parser: exactly what raw pg returns (pg's own parsers, in this process's TZ).
      const expected = (await raw.query(text)).rows
      expect((await db.query(text)).rows).toEqual(expected)
      expect((await db.query({ text, rowMode: 'array' })).rows).toEqual([Object.values(expected[0]!)])
      const previous = pg.types.getTypeParser(DATE, 'text')
      pg.types.setTypeParser(DATE, (v: string) => `global:${v}`)
      try {
        for (const options of [undefined, { route: 'primary' as const }]) {
          expect((await db.query(text, undefined, options)).rows[0]!.d).toBe('global:2024-01-02')
        }
        expect((await db.transaction((tx) => tx.query(text))).rows[0]!.d).toBe('global:2024-01-02')
        expect((await raw.query(text)).rows[0]!.d).toBe('global:2024-01-02')
      } finally {
        pg.types.setTypeParser(DATE, previous)
      }
      expect((await db.query(text)).rows).toEqual(expected)
    } finally {
      await raw.end()
    }
  })

  it('accepts a name and ignores it: keel names statements itself', async () => {
    const db = keel.tenant('acme')
    // pg would refuse the second ("Prepared statements must be unique"): keel's names are its own.
    const a = await db.query({ name: 'orm_stmt', text: 'SELECT 1 AS one' })
    const b = await db.query({ name: 'orm_stmt', text: 'SELECT 2 AS two' })
    expect([a.rows, b.rows]).toEqual([[{ one: 1 }], [{ two: 2 }]])
  })

  it('refuses malformed configs with KEEL_QUERY_INVALID, before anything is sent', async () => {
    const db = keel.tenant('acme')
    const bad: unknown[] = [
      null,
      42,
      ['SELECT 1'],
      {},
      { text: 5 },
      { text: 'SELECT 1', rowMode: 'object' },
      { text: 'SELECT 1', types: {} },
      { text: 'SELECT 1', types: null },
      { text: 'SELECT 1', values: 'x' },
      { text: 'SELECT 1', binary: true },
      { text: 'SELECT 1', rows: 10 },
      { text: 'SELECT 1', queryMode: 'simple' },
      { text: 'SELECT 1', name: 7 },
      { text: 'SELECT 1', submit() {} },
      { text: 'BEGIN' },
      { text: '' },
    ]
    for (const config of bad) {
      const error = await db.query(config as never).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isKeelError(error, 'KEEL_QUERY_INVALID'), JSON.stringify(config)).toBe(true)
      const inTx = await db
        .transaction((tx) => tx.query(config as never))
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(isKeelError(inTx, 'KEEL_QUERY_INVALID'), JSON.stringify(config)).toBe(true)
    }
  })
})
