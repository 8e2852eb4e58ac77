import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyRlsPolicy, type Keel } from '../src/index.js'
import { EXPORT_TYPES } from '../src/stream/export-types.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

// db.export() reads each table with COPY (SELECT ...) TO STDOUT (ADR 0044). ndjson goes through COPY's
// CSV format with a quote and a delimiter (\x01, \x02) that must never occur in a line: values full of
// what CSV, COPY's text format or ndjson treat specially come out as one JSON line per row, equal to the
// documented form. A COPY cut short retires its connection: no backend is left mid-COPY.
const tricky = 'export_copy_tricky'
const big = 'export_copy_big'
const app = 'keel-export-copy-test'
let keel: Keel
let su: pg.Client

const VALUES = [
  '\\',
  '\\\\.',
  '\\.',
  'a "quoted" \'single\'',
  'line\nbreak\r\nand CR\r',
  'tab\there',
  `ctl ${String.fromCharCode(1)} ${String.fromCharCode(2)} ${String.fromCharCode(31)} ${String.fromCharCode(127)}`,
  'é ✓ 𝄞 中文 \u2028 \u2029',
  '',
  ',;|\\N',
]

beforeAll(async () => {
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${tricky}`)
    await owner.query(
      `CREATE TABLE ${tricky} (tenant_id text NOT NULL, id int PRIMARY KEY, t text, js json, jb jsonb, arr text[])`,
    )
    await applyRlsPolicy(owner, { table: tricky })
  } finally {
    await owner.end()
  }
  await createRlsTable(big)
  su = await connect('super')
  for (const [i, value] of VALUES.entries()) {
    await su.query(`INSERT INTO ${tricky} VALUES ('t', $1, $2, $3, $4, $5)`, [
      i + 1,
      value,
      // json keeps its input text: raw CR/LF and tabs as whitespace between tokens.
      `{\r\n\t"v" :\n ${JSON.stringify(value)} ,\n"n": [1,\r\n2]\n}`,
      JSON.stringify({ v: value }),
      [value, null, 'x'],
    ])
  }
  await su.query(`INSERT INTO ${tricky} VALUES ('other', 100, 'not yours', NULL, NULL, NULL)`)
  await su.query(
    `INSERT INTO ${big} (tenant_id, body, n) SELECT 'mega', repeat('x', 200), g FROM generate_series(1, 200000) g`,
  )
  await su.query(`INSERT INTO ${big} (tenant_id, n) SELECT 'small', g FROM generate_series(1, 500) g`)
  keel = testKeel({ applicationName: app, pool: { max: 3 } })
}, 120_000)
afterAll(async () => {
  await keel.close()
  await su.end()
  await dropTable(tricky)
  await dropTable(big)
})

describe('db.export() through COPY', () => {
  it('ndjson: one JSON line per row over tricky values, equal to the documented form', async () => {
    const db = keel.tenant('t')
    let text = ''
    for await (const chunk of db.export({ tables: [tricky], format: 'ndjson' })) text += chunk
    expect(text.endsWith('\n')).toBe(true)
    for (const c of ['\r', String.fromCharCode(1), String.fromCharCode(2)]) expect(text).not.toContain(c)
    const lines = text.slice(0, -1).split('\n')
    expect(lines).toHaveLength(VALUES.length)
    const got = lines
      .map((line) => JSON.parse(line) as { table: string; row: { id: number } })
      .sort((a, b) => a.row.id - b.row.id)
    expect(got.every((l) => l.table === tricky)).toBe(true)
    const expected = await db.query({ text: `SELECT * FROM ${tricky} ORDER BY id`, types: EXPORT_TYPES })
    expect(got.map((l) => l.row)).toEqual(JSON.parse(JSON.stringify(expected.rows)))
    expect(got.map((l) => (l.row as unknown as { t: string }).t)).toEqual(VALUES)
  })

  it('csv: every tricky value round-trips through an RFC 4180 parse; progress counts records, not LFs', async () => {
    const db = keel.tenant('t')
    let text = ''
    const out = db.export({ tables: [tricky], format: 'csv' })
    let last = { rows: 0, tableRows: 0 }
    out.on('progress', (p: { rows: number; tableRows: number }) => {
      last = p
    })
    for await (const chunk of out) text += chunk
    const records = parseCsv(text)
    expect(records[0]).toEqual(['tenant_id', 'id', 't', 'js', 'jb', 'arr'])
    const rows = records.slice(1).sort((a, b) => Number(a[1]) - Number(b[1]))
    expect(rows.map((r) => r[2])).toEqual(VALUES)
    // json as Postgres keeps it (its input text), jsonb as Postgres writes it: both parse to the value.
    expect(rows.map((r) => (JSON.parse(r[3]!) as { v: string }).v)).toEqual(VALUES)
    expect(rows.map((r) => (JSON.parse(r[4]!) as { v: string }).v)).toEqual(VALUES)
    expect(last).toEqual({ table: tricky, rows: VALUES.length, tableRows: VALUES.length })
  })

  it('a COPY stopped mid-table retires its connection: no backend left in COPY; next calls scoped', async () => {
    const db = keel.tenant('mega')
    let pid: number | undefined
    let chunks = 0
    for await (const _ of db.export({ tables: [big], format: 'ndjson' })) {
      if (++chunks === 2) {
        const r = await su.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'COPY%'`,
          [app],
        )
        expect(r.rows).toHaveLength(1)
        pid = r.rows[0]!.pid
        break
      }
    }
    expect(pid).toBeDefined()
    await waitFor('the COPY backend gone', async () => {
      const r = await su.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])
      return r.rows.length === 0
    })
    const left = await su.query<{ state: string }>(
      `SELECT state FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
      [app],
    )
    expect(left.rows).toEqual([])
    const small = await keel.tenant('small').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${big}`)
    expect(small.rows[0]!.c).toBe('500')
    let text = ''
    for await (const chunk of keel.tenant('small').export({ tables: [big], format: 'ndjson' })) text += chunk
    const lines = text.trimEnd().split('\n')
    expect(lines).toHaveLength(500)
    expect(lines.every((line) => line.includes('"tenant_id":"small"'))).toBe(true)
  }, 60_000)

  it('maxRowsPerSecond paces the COPY: rows come no faster than the pace and the server waits on the client', async () => {
    const rate = 20_000
    const out = keel.tenant('mega').export({ tables: [big], format: 'ndjson', maxRowsPerSecond: rate })
    let rows = 0
    out.on('progress', (e: { rows: number }) => {
      rows = e.rows
    })
    const started = performance.now()
    let waits = 0
    let sampled = 0
    // Read as fast as possible: only the pace holds the export back (unpaced, all 200,000 rows take
    // well under a second here).
    for await (const _ of out) {
      const elapsedS = (performance.now() - started) / 1_000
      // The schedule, a tenth of a second's burst and one chunk's rows of slack.
      expect(rows).toBeLessThanOrEqual(rate * (elapsedS + 0.1) + 1_000)
      if (elapsedS > 0.5 && sampled < 20) {
        sampled++
        const r = await su.query<{ wait_event: string | null }>(
          `SELECT wait_event FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'COPY%'`,
          [app],
        )
        if (r.rows[0]?.wait_event === 'ClientWrite') waits++
      }
      if (elapsedS > 1.5) break
    }
    expect(rows).toBeGreaterThan(rate * 0.5)
    // The COPY is paused on the client's side, so the backend sits writing to a full socket.
    expect(waits).toBeGreaterThan(0)
    await waitFor('the paced COPY backend gone', async () => {
      const r = await su.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
        [app],
      )
      return r.rows.length === 0
    })
  }, 60_000)

  it('a bad maxRowsPerSecond is refused before anything is sent', () => {
    for (const bad of [0, -5, Number.NaN, Number.POSITIVE_INFINITY, '100' as unknown as number]) {
      expect(() =>
        keel.tenant('mega').export({ tables: [big], format: 'csv', maxRowsPerSecond: bad }),
      ).toThrow(expect.objectContaining({ code: 'KEEL_QUERY_INVALID' }))
    }
  })

  it('a statementTimeoutMs bounds a COPY whose consumer stalls; the connection is retired', async () => {
    const out = keel.tenant('mega').export({ tables: [big], format: 'ndjson', statementTimeoutMs: 300 })
    const failure = await (async () => {
      for await (const _ of out) await new Promise((r) => setTimeout(r, 100))
    })().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(Error)
    await waitFor('nothing left in a transaction or COPY', async () => {
      const r = await su.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
        [app],
      )
      return r.rows.length === 0
    })
    const small = await keel.tenant('small').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${big}`)
    expect(small.rows[0]!.c).toBe('500')
  }, 60_000)
})

/** A strict RFC 4180 parser (LF record ends): records of fields. */
function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let field = ''
  let i = 0
  while (i < text.length) {
    const c = text[i]!
    if (c === '"') {
      const close = text.indexOf('"', i + 1)
      let at = i + 1
      let end = close
      for (;;) {
        if (text[end + 1] !== '"') break
        field += text.slice(at, end + 1)
        at = end + 2
        end = text.indexOf('"', at)
      }
      field += text.slice(at, end)
      i = end + 1
    } else if (c === ',') {
      record.push(field)
      field = ''
      i++
    } else if (c === '\n') {
      record.push(field)
      records.push(record)
      record = []
      field = ''
      i++
    } else {
      field += c
      i++
    }
  }
  expect(field).toBe('')
  return records
}
