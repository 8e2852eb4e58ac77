import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyRlsPolicy, type Keel } from '../src/index.js'
import { EXPORT_TYPES } from '../src/stream/export-types.js'
import { connect, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'

// Postgres writes export's ndjson lines itself (ndjson-select.ts): every type must come out exactly as
// the documented form export-types.ts defines on the client (and as the export wrote it before).
const table = 'export_wide_types'
let keel: Keel

beforeAll(async () => {
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${table}`)
    await owner.query(`CREATE TABLE ${table} (
      tenant_id text NOT NULL, id int PRIMARY KEY, s smallint, big bigint, num numeric, f4 real, f8 float8,
      ts timestamptz, tsn timestamp, d date, u uuid, iv interval, ints int[], texts text[], js json, jb jsonb,
      bin bytea, flag boolean, o oid, "Odd ""name""" text, t time, ip inet, money_col money, ch char(3))`)
    await applyRlsPolicy(owner, { table })
  } finally {
    await owner.end()
  }
  const su = await connect('super')
  await su.query(`INSERT INTO ${table} VALUES
    ('t', 1, -3, -9223372036854775808, -0.000000000000000000001, 0.1, 1e300, '2026-12-02 07:00:00.123456+05:30',
     '0001-01-01 00:00:00', '2026-02-28', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:03:04.5', '{1,NULL,3}',
     '{"a,b","c\\"d",NULL}', '{ "spaced" :  [1, 2] }', '{"k": {"n": 1.50}}', decode(repeat('ab', 100), 'hex'),
     true, 4294967295, 'é ✓ 𝄞 "\\\\ tab	end', '23:59:59.999999', '10.0.0.1/8', 12.5, 'ab'),
    ('t', 2, NULL, NULL, 'NaN', '-Infinity', 'NaN', '-infinity', 'infinity', 'infinity', NULL, NULL, '{}', '{}',
     'null', '"str"', '\\x', false, 0, '', NULL, NULL, NULL, NULL),
    ('other', 3, 1, 1, 1, 1, 1, now(), now(), now(), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     'not yours', NULL, NULL, NULL, NULL)`)
  await su.end()
  keel = testKeel({ pool: { max: 2 } })
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

describe("export's ndjson written by Postgres", () => {
  it('equals the documented client-side form for every type, row by row', async () => {
    const db = keel.tenant('t')
    let text = ''
    for await (const chunk of db.export({ tables: [table], format: 'ndjson' })) text += chunk
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { table: string; row: unknown })
    expect(lines.every((l) => l.table === table)).toBe(true)
    const expected = await db.query({ text: `SELECT * FROM ${table} ORDER BY id`, types: EXPORT_TYPES })
    const got = lines.map((l) => l.row).sort((a, b) => (a as { id: number }).id - (b as { id: number }).id)
    expect(got).toEqual(JSON.parse(JSON.stringify(expected.rows)))
    expect(got).toHaveLength(2)
  })
})
