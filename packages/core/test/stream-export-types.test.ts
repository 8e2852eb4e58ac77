import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyRlsPolicy, type Keel } from '../src/index.js'
import { EXPORT_TYPES } from '../src/stream/export-types.js'
import { connect, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'

// Postgres writes export's ndjson lines and csv records itself (COPY, copy-statement.ts): every type
// must come out as the documented form export-types.ts defines on the client (and as the export wrote
// it before through a cursor). csv: json/jsonb text and floats are compared as values (Postgres' own
// spacing and float notation), a JSON null column is the text null, not an empty field.
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

  it('csv: every type as the documented form, field by field', async () => {
    const db = keel.tenant('t')
    let text = ''
    for await (const chunk of db.export({ tables: [table], format: 'csv' })) text += chunk
    const records = parseCsv(text)
    const expected = await db.query({ text: `SELECT * FROM ${table} ORDER BY id`, types: EXPORT_TYPES })
    expect(records[0]).toEqual(expected.fields.map((f) => f.name))
    const rows = records.slice(1).sort((a, b) => Number(a[1]) - Number(b[1]))
    expect(rows).toHaveLength(2)
    const kinds = new Map(expected.fields.map((f) => [f.name, f.dataTypeID]))
    for (const [r, row] of rows.entries()) {
      const want = expected.rows[r] as Record<string, unknown>
      for (const [c, name] of records[0]!.entries()) {
        const got = row[c]!
        const value = want[name]
        const oid = kinds.get(name)
        const where = `${name} of row ${r + 1}: ${JSON.stringify(got)}`
        if (oid === 114 || oid === 3802) expect(JSON.parse(got), where).toEqual(value)
        else if (value === null) expect(got, where).toBe('')
        else if (typeof value === 'number') expect(Number(got), where).toBe(value)
        else expect(got, where).toBe(String(value))
      }
    }
  })
})

/** RFC 4180 with LF record ends; a quoted empty field is the empty string, an unquoted one NULL (''). */
function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let field = ''
  let i = 0
  while (i < text.length) {
    const c = text[i]!
    if (c === '"') {
      let end = text.indexOf('"', i + 1)
      let at = i + 1
      while (text[end + 1] === '"') {
        field += text.slice(at, end + 1)
        at = end + 2
        end = text.indexOf('"', at)
      }
      field += text.slice(at, end)
      i = end + 1
    } else if (c === ',' || c === '\n') {
      record.push(field)
      field = ''
      if (c === '\n') {
        records.push(record)
        record = []
      }
      i++
    } else {
      field += c
      i++
    }
  }
  return records
}
