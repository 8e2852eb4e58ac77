import type { Readable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyRlsPolicy, isKeelError, type Keel } from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

// db.export(): one REPEATABLE READ snapshot over several tables, fetched as the consumer reads. A big
// tenant (550k rows over two tables) goes to a deliberately slow consumer while another tenant's rows
// sit in the same tables and a transaction writes to both tables mid-export.
const orders = 'export_orders'
const lines = 'export_lines'
const typed = 'export_types'
const app = 'keel-export-test'
const BIG_ORDERS = 300_000
const BIG_LINES = 250_000
let keel: Keel
let su: pg.Client

const codeOf = (error: unknown) =>
  isKeelError(error) ? error.code : String((error as { code?: unknown }).code ?? error)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
// A full collection on demand (the test process is not started with --expose-gc): RSS alone mixes
// what is retained with garbage not yet collected.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

beforeAll(async () => {
  await createRlsTable(orders)
  await createRlsTable(lines)
  su = await connect('super')
  const body = `repeat('x', 120)`
  await su.query(
    `INSERT INTO ${orders} (tenant_id, body, n) SELECT 'mega', ${body}, g FROM generate_series(1, ${BIG_ORDERS}) g`,
  )
  await su.query(
    `INSERT INTO ${lines} (tenant_id, body, n) SELECT 'mega', ${body}, g FROM generate_series(1, ${BIG_LINES}) g`,
  )
  // Another tenant's rows interleaved in the same tables.
  await su.query(`INSERT INTO ${orders} (tenant_id, n) SELECT 'small', g FROM generate_series(1, 20000) g`)
  await su.query(`INSERT INTO ${lines} (tenant_id, n) SELECT 'small', g FROM generate_series(1, 20000) g`)
  await su.query(`ANALYZE ${orders}; ANALYZE ${lines}`)
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${typed}`)
    await owner.query(`CREATE TABLE ${typed} (
      tenant_id text NOT NULL, id int PRIMARY KEY, big bigint, num numeric, ts timestamptz, tsn timestamp,
      js jsonb, bin bytea, flag boolean, f float8, note text)`)
    await applyRlsPolicy(owner, { table: typed })
  } finally {
    await owner.end()
  }
  await su.query(`SET TimeZone = 'UTC'`)
  await su.query(
    `INSERT INTO ${typed} VALUES
      ('t', 1, 9007199254740993, 12345678901234567890.000000001, '2026-12-02 07:00:00.123456+00', '2026-12-02 07:00:00.5',
       '{"a":[1,"x"],"b":null}', '\\x00ff10', true, 1.5, 'comma, "quote"' || chr(10) || 'newline'),
      ('t', 2, NULL, 'NaN', 'infinity', NULL, 'null', '\\x', false, 'Infinity', ''),
      ('other', 3, 1, 1, now(), now(), '{}', '\\x01', true, 0, 'not yours')`,
  )
  keel = testKeel({ applicationName: app, pool: { max: 4 } })
}, 300_000)
afterAll(async () => {
  await keel.close()
  await su.end()
  for (const t of [orders, lines, typed]) await dropTable(t)
})

async function expectNoneInTransaction(): Promise<void> {
  await waitFor('no connection idle in transaction', async () => {
    const r = await su.query<{ state: string | null }>(
      'SELECT state FROM pg_stat_activity WHERE application_name = $1',
      [app],
    )
    return r.rows.every((s) => s.state === 'idle' || s.state === null)
  })
}

/** Reads `out` to the end as text lines, pausing `pauseMs` after every chunk (a slow consumer). */
async function consumeLines(out: Readable, onLine: (line: string) => void, pauseMs = 0): Promise<void> {
  let rest = ''
  for await (const chunk of out) {
    const text = rest + (chunk as string)
    const parts = text.split('\n')
    rest = parts.pop()!
    for (const line of parts) onLine(line)
    if (pauseMs > 0) await sleep(pauseMs)
  }
  if (rest !== '') onLine(rest)
}

describe('db.export()', () => {
  it('550k rows over two tables to a slow consumer: flat memory, every row once, none of another tenant, one snapshot', async () => {
    const db = keel.tenant('mega')
    // Ids are one bigserial per table: a byte per id (allocated before the baseline) finds duplicates.
    const maxId = (t: string) =>
      su.query<{ m: string }>(`SELECT max(id)::text AS m FROM ${t}`).then((r) => Number(r.rows[0]!.m) + 100)
    const seen = {
      [orders]: new Uint8Array(await maxId(orders)),
      [lines]: new Uint8Array(await maxId(lines)),
    }
    const counts = { [orders]: 0, [lines]: 0 }
    let duplicates = 0
    let foreign = 0
    let during = 0
    gc()
    const before = process.memoryUsage().rss
    const heapBefore = process.memoryUsage().heapUsed
    let retainedPeak = heapBefore
    let peak = before
    const startedAt = performance.now()
    const out = db.export({ tables: [orders, lines], format: 'ndjson', batchSize: 1_000 })
    let wrote = false
    let chunks = 0
    let rest = ''
    for await (const chunk of out) {
      const text = rest + (chunk as string)
      const parts = text.split('\n')
      rest = parts.pop()!
      for (const line of parts) {
        const { table, row } = JSON.parse(line) as {
          table: typeof orders
          row: { tenant_id: string; id: string; body: string }
        }
        if (row.tenant_id !== 'mega') foreign++
        if (row.body === 'during') during++
        const id = Number(row.id)
        if (seen[table]![id]! > 0) duplicates++
        seen[table]![id] = 1
        counts[table]!++
      }
      // Mid-export, a transaction commits one row to each table: the snapshot has neither.
      if (++chunks === 20 && !wrote) {
        wrote = true
        await db.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${orders} (tenant_id, body) VALUES ('mega', 'during')`)
          await tx.query(`INSERT INTO ${lines} (tenant_id, body) VALUES ('mega', 'during')`)
        })
      }
      // The slow consumer: a pause per chunk (a batch of 1,000 rows, about 200 KB).
      await sleep(3)
      if (chunks % 25 === 0) peak = Math.max(peak, process.memoryUsage().rss)
      if (chunks % 100 === 0) {
        // What is still reachable mid-export: the heap after a full collection.
        gc()
        retainedPeak = Math.max(retainedPeak, process.memoryUsage().heapUsed)
      }
    }
    peak = Math.max(peak, process.memoryUsage().rss)
    const seconds = (performance.now() - startedAt) / 1_000
    const growthMiB = (peak - before) / 2 ** 20
    const retainedMiB = (retainedPeak - heapBefore) / 2 ** 20
    console.log(
      `export of ${counts[orders] + counts[lines]} rows in ${chunks} chunks: rss before ${(before / 2 ** 20).toFixed(1)} MiB, peak ${(peak / 2 ** 20).toFixed(1)} MiB, growth ${growthMiB.toFixed(1)} MiB; heap after full GC: +${retainedMiB.toFixed(1)} MiB at most; ${seconds.toFixed(1)} s (${(chunks * 3) / 1_000} s of it the consumer's pauses)`,
    )
    expect(rest).toBe('')
    expect(wrote).toBe(true)
    expect({ counts, duplicates, foreign, during }).toEqual({
      counts: { [orders]: BIG_ORDERS, [lines]: BIG_LINES },
      duplicates: 0,
      foreign: 0,
      during: 0,
    })
    expect(growthMiB).toBeLessThan(150)
    expect(retainedMiB).toBeLessThan(32)
    // The write did commit: a new export (a new snapshot) has it in both tables.
    let after = 0
    await consumeLines(db.export({ tables: [orders, lines], format: 'ndjson', batchSize: 5_000 }), (line) => {
      if (line.includes('"body":"during"')) after++
    })
    expect(after).toBe(2)
    await expectNoneInTransaction()
  }, 300_000)

  it('for comparison (printed, not asserted): the same big table buffered by db.query', async () => {
    gc()
    const heapBefore = process.memoryUsage().heapUsed
    const result = await keel.tenant('mega').query(`SELECT * FROM ${orders}`)
    gc()
    const heldMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20
    console.log(`db.query of ${result.rows.length} rows holds ${heldMiB.toFixed(1)} MiB of heap (after GC)`)
    expect(result.rows.length).toBeGreaterThanOrEqual(BIG_ORDERS)
  }, 120_000)

  it("types survive in the documented form (ndjson), only the tenant's rows", async () => {
    const rows: Array<Record<string, unknown>> = []
    await consumeLines(keel.tenant('t').export({ tables: [typed], format: 'ndjson' }), (line) => {
      const parsed = JSON.parse(line) as { table: string; row: Record<string, unknown> }
      expect(parsed.table).toBe(typed)
      rows.push(parsed.row)
    })
    rows.sort((a, b) => (a.id as number) - (b.id as number))
    expect(rows).toEqual([
      {
        tenant_id: 't',
        id: 1,
        big: '9007199254740993',
        num: '12345678901234567890.000000001',
        ts: expect.stringMatching(/^2026-12-02T\d\d:00:00\.123456[+-]\d\d:\d\d$/),
        tsn: '2026-12-02T07:00:00.5',
        js: { a: [1, 'x'], b: null },
        bin: Buffer.from([0x00, 0xff, 0x10]).toString('base64'),
        flag: true,
        f: 1.5,
        note: 'comma, "quote"\nnewline',
      },
      {
        tenant_id: 't',
        id: 2,
        big: null,
        num: 'NaN',
        ts: 'infinity',
        tsn: null,
        js: null,
        bin: '',
        flag: false,
        f: 'Infinity',
        note: '',
      },
    ])
    expect(new Date(rows[0]!.ts as string).toISOString()).toBe('2026-12-02T07:00:00.123Z')
  })

  it('csv: a header, RFC 4180 quoting, NULL empty and the empty string quoted, LF line ends', async () => {
    let text = ''
    for await (const chunk of keel.tenant('t').export({ tables: [typed], format: 'csv' })) text += chunk
    expect(text).not.toContain('\r')
    const records = text.split(/\n(?=t,|$)/)
    expect(records[0]).toBe('tenant_id,id,big,num,ts,tsn,js,bin,flag,f,note')
    expect(records.at(-1)).toBe('')
    const body = records.slice(1, -1).join('\n')
    // json/jsonb as Postgres writes their text (jsonb: its canonical form, with spaces); a JSON null is null.
    expect(body).toContain('"{""a"": [1, ""x""], ""b"": null}"')
    expect(body).toContain('"comma, ""quote""\nnewline"')
    expect(body).toContain('t,2,,NaN,infinity,,null,"",false,Infinity,""')
    expect(body).not.toContain('not yours')
  })

  it('refuses bad input before anything is sent (KEEL_QUERY_INVALID)', () => {
    const db = keel.tenant('t')
    for (const options of [
      { tables: ['public.export_types'], format: 'ndjson' as const },
      { tables: ['x; DROP TABLE y'], format: 'ndjson' as const },
      { tables: ['"quoted"'], format: 'ndjson' as const },
      { tables: [], format: 'ndjson' as const },
      { tables: [orders, lines], format: 'csv' as const },
      { tables: [orders], format: 'xml' as 'csv' },
      { tables: [orders], format: 'ndjson' as const, batchSize: 1.5 },
    ]) {
      expect(() => db.export(options), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: 'KEEL_QUERY_INVALID' }),
      )
    }
  })

  it('a missing table fails the stream with the Postgres error; nothing leaks', async () => {
    const failure = await consumeLines(
      keel.tenant('t').export({ tables: ['no_such_table'], format: 'ndjson' }),
      () => undefined,
    ).catch((error: unknown) => error)
    expect(codeOf(failure)).toBe('42P01')
    await expectNoneInTransaction()
  })

  it('the consumer stops early (destroy), errors, or aborts: the transaction ends, next calls scoped', async () => {
    const db = keel.tenant('mega')
    // destroy() after the first chunk
    const first = db.export({ tables: [orders], format: 'ndjson' })
    for await (const _ of first) break
    await expectNoneInTransaction()
    // The consumer's pipeline fails
    const second = db.export({ tables: [orders], format: 'ndjson' })
    const failure = await (async () => {
      for await (const _ of second) throw new Error('sink failed')
    })().catch((error: unknown) => error)
    expect((failure as Error).message).toBe('sink failed')
    await expectNoneInTransaction()
    // The signal
    const fourth = new AbortController()
    const stopped = (async () => {
      let n = 0
      for await (const _ of db.export({ tables: [orders], format: 'ndjson', signal: fourth.signal })) {
        if (++n === 3) fourth.abort()
      }
    })().catch((error: unknown) => error)
    expect(((await stopped) as Error).name).toBe('AbortError')
    await expectNoneInTransaction()
    const small = await keel.tenant('small').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${orders}`)
    expect(small.rows[0]!.c).toBe('20000')
  }, 120_000)

  it('the backend killed mid-export: the stream errors, next calls succeed and are scoped', async () => {
    const out = keel.tenant('mega').export({ tables: [orders], format: 'ndjson' })
    const failure = await (async () => {
      let n = 0
      for await (const _ of out) {
        if (++n === 3) {
          const r = await su.query<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state IN ('idle in transaction', 'active')`,
            [app],
          )
          expect(r.rows.length).toBe(1)
          await su.query('SELECT pg_terminate_backend($1)', [r.rows[0]!.pid])
        }
      }
    })().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(Error)
    await expectNoneInTransaction()
    const small = await keel.tenant('small').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${lines}`)
    expect(small.rows[0]!.c).toBe('20000')
    let rows = 0
    await consumeLines(keel.tenant('small').export({ tables: [lines], format: 'ndjson' }), (line) => {
      expect(line).toContain('"tenant_id":"small"')
      rows++
    })
    expect(rows).toBe(20000)
  })
})
