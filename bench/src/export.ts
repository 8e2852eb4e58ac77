/**
 * Export (issue #15), side by side in one run:
 *
 * 1. Throughput: one big tenant's rows (RLS, the app role) out of Postgres into a sink that counts bytes,
 *    through a raw `COPY (SELECT * ...) TO STDOUT` (pg-copy-streams; text and CSV), keel's db.export()
 *    (ndjson and csv) and a buffered `pool.query` written out as ndjson afterwards. Each variant runs in
 *    its own child process (so peak RSS and heap are its own), alternating, medians over rounds.
 * 2. Other tenants' p99 (point selects, many small tenants, the same keel) alone and while the big
 *    tenant's export runs back to back in the same process.
 *
 *   bash scripts/bench.sh export
 *
 * Environment: BENCH_EXPORT_ROWS (300000), BENCH_ROUNDS (3), BENCH_SECONDS (4), BENCH_CONCURRENCY (8),
 * BENCH_EXPORT_BATCH (keel's default). A benchmark, not a test: it never fails on timings.
 *
 * One file (about 390 lines) on purpose: it re-runs itself as the child of each variant
 * (`--child <variant>`), so the variants, the parent's rounds and the report share one entry point.
 */
import { spawn } from 'node:child_process'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { applyRlsPolicy, createKeel, type ExportProgressEvent, type Keel } from '@keel/core'
import pg from 'pg'
import { to as copyTo } from 'pg-copy-streams'
import { envNumber } from './lib/env.js'
import { closedLoop, type LoopResult } from './lib/load.js'
import { machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  rows: Math.round(envNumber('BENCH_EXPORT_ROWS', 300_000)),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  seconds: envNumber('BENCH_SECONDS', 4),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 8)),
  batchSize: process.env.BENCH_EXPORT_BATCH ? Math.round(envNumber('BENCH_EXPORT_BATCH', 1_000)) : undefined,
  smallTenants: 40,
  smallRows: 100,
}

const TABLE = 'bench_export_items'
const BIG = 'megacorp'

const VARIANTS = {
  'copy-text': 'raw COPY (SELECT *) TO STDOUT, text (pg-copy-streams)',
  'keel-ndjson': "keel db.export({ format: 'ndjson' })",
  'copy-csv': 'raw COPY (SELECT *) TO STDOUT WITH CSV HEADER',
  'keel-csv': "keel db.export({ format: 'csv' })",
  buffered: 'buffered pool.query(SELECT *), then written as ndjson',
} as const
type VariantKey = keyof typeof VARIANTS

interface ChildResult {
  ms: number
  bytes: number
  rows: number
  baseRssMB: number
  peakRssMB: number
  peakHeapMB: number
}

/** Discards what it is given, counting bytes and (text formats) lines. */
function countingSink(): Writable & { bytes: number; lines: number } {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      sink.bytes += chunk.length
      let at = chunk.indexOf(10)
      while (at !== -1) {
        sink.lines++
        at = chunk.indexOf(10, at + 1)
      }
      callback()
    },
  }) as Writable & { bytes: number; lines: number }
  sink.bytes = 0
  sink.lines = 0
  return sink
}

function appKeel(max: number): Keel {
  return createKeel({
    postgres: { primary: { connectionString: readStack().primary.url }, pool: { max } },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
  })
}

async function setup(): Promise<void> {
  const stack = readStack()
  const su = new pg.Client({ connectionString: stack.primary.superUrl })
  await su.connect()
  try {
    const have = await su
      .query<{ n: string }>(`SELECT count(*)::text AS n FROM ${TABLE} WHERE tenant_id = $1`, [BIG])
      .catch(() => undefined)
    if (have?.rows[0]?.n === String(settings.rows)) return
    const owner = new pg.Client({ connectionString: stack.primary.ownerUrl })
    await owner.connect()
    await owner.query(`DROP TABLE IF EXISTS ${TABLE}`)
    await owner.query(`CREATE TABLE ${TABLE} (
      tenant_id text NOT NULL, id bigint NOT NULL, customer text NOT NULL, amount numeric(12,2) NOT NULL,
      status text NOT NULL, created_at timestamptz NOT NULL, attrs jsonb NOT NULL, PRIMARY KEY (tenant_id, id))`)
    await applyRlsPolicy(owner, { table: TABLE })
    await owner.end()
    const insert = (tenant: string, n: number) =>
      su.query(
        `INSERT INTO ${TABLE} SELECT $1, g, 'customer ' || (g % 997), (g % 100000) / 100.0,
           (ARRAY['open','paid','void'])[1 + g % 3], timestamptz '2026-01-01' + g * interval '1 minute',
           jsonb_build_object('region', 'eu-' || (g % 5), 'seats', g % 50)
           FROM generate_series(1, $2) g`,
        [tenant, n],
      )
    await insert(BIG, settings.rows)
    for (let i = 0; i < settings.smallTenants; i++) await insert(`small${i}`, settings.smallRows)
    await su.query(`VACUUM ANALYZE ${TABLE}`)
  } finally {
    await su.end()
  }
}

/** One variant, measured in this (child) process. */
async function runChild(variant: VariantKey): Promise<ChildResult> {
  const stack = readStack()
  let peakRss = 0
  let peakHeap = 0
  const sample = () => {
    const m = process.memoryUsage()
    peakRss = Math.max(peakRss, m.rss)
    peakHeap = Math.max(peakHeap, m.heapUsed)
  }
  const sink = countingSink()
  let rows = 0
  let run: () => Promise<void>
  let close: () => Promise<void>
  if (variant === 'keel-ndjson' || variant === 'keel-csv') {
    const keel = appKeel(2)
    const db = keel.tenant(BIG)
    await db.query('SELECT 1') // connect before the clock starts, as the raw client does
    run = async () => {
      const out = db.export({
        tables: [TABLE],
        format: variant === 'keel-csv' ? 'csv' : 'ndjson',
        ...(settings.batchSize === undefined ? {} : { batchSize: settings.batchSize }),
      })
      out.on('progress', (e: ExportProgressEvent) => {
        rows = e.rows
      })
      await pipeline(out, sink)
    }
    close = () => keel.close()
  } else {
    const client = new pg.Client({ connectionString: stack.primary.url })
    await client.connect()
    await client.query("SELECT set_config('app.tenant_id', $1, false)", [BIG])
    run = async () => {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
      if (variant === 'buffered') {
        const result = await client.query(`SELECT * FROM ${TABLE}`)
        rows = result.rows.length
        sample()
        // What a naive "download" does with them: every row as an ndjson line, in one string.
        let text = ''
        for (const row of result.rows) text += `{"table":"${TABLE}","row":${JSON.stringify(row)}}\n`
        sample()
        await pipeline(async function* () {
          yield text
        }, sink)
      } else {
        const csv = variant === 'copy-csv' ? ' WITH (FORMAT csv, HEADER)' : ''
        await pipeline(client.query(copyTo(`COPY (SELECT * FROM ${TABLE}) TO STDOUT${csv}`)), sink)
        rows = sink.lines - (variant === 'copy-csv' ? 1 : 0)
      }
      await client.query('COMMIT')
    }
    close = () => client.end()
  }
  globalThis.gc?.()
  const baseRss = process.memoryUsage().rss
  sample()
  const timer = setInterval(sample, 5)
  const started = performance.now()
  await run()
  const ms = performance.now() - started
  clearInterval(timer)
  sample()
  await close()
  const mb = (n: number) => n / 2 ** 20
  return {
    ms,
    bytes: sink.bytes,
    rows,
    baseRssMB: mb(baseRss),
    peakRssMB: mb(peakRss),
    peakHeapMB: mb(peakHeap),
  }
}

function spawnChild(variant: VariantKey): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', fileURLToPath(import.meta.url), '--child', variant],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    )
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${variant} child exited with ${code}`))
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!) as ChildResult)
    })
  })
}

interface VariantSummary {
  key: VariantKey
  label: string
  rows: number
  bytes: number
  medianMs: number
  rowsPerS: number
  mbPerS: number
  peakRssMB: number
  peakRssOverBaseMB: number
  peakHeapMB: number
  runs: ChildResult[]
}

interface Results {
  meta: ReturnType<typeof machineMeta> & { loadAverageEnd?: number[] }
  settings: typeof settings
  variants: VariantSummary[]
  ratios: { ndjsonVsCopyText: number; csvVsCopyCsv: number }
  others: {
    alone: LoopResult[]
    duringExport: LoopResult[]
    p99AloneMs: number
    p99DuringMs: number
    ratio: number
    exportsCompleted: number
  }
  totalS?: number
}

async function othersP99(): Promise<Results['others']> {
  const keel = appKeel(10)
  const small = Array.from({ length: settings.smallTenants }, (_, i) => keel.tenant(`small${i}`))
  const op = () =>
    small[Math.floor(Math.random() * small.length)]!.query(`SELECT * FROM ${TABLE} WHERE id = $1`, [
      1 + Math.floor(Math.random() * settings.smallRows),
    ])
  const alone: LoopResult[] = []
  const during: LoopResult[] = []
  let exportsCompleted = 0
  try {
    await closedLoop(op, { concurrency: settings.concurrency, seconds: 1 }) // warm-up
    for (let round = 0; round < settings.rounds; round++) {
      alone.push(await closedLoop(op, { concurrency: settings.concurrency, seconds: settings.seconds }))
      let stop = false
      const big = keel.tenant(BIG)
      const exporter = (async () => {
        while (!stop) {
          await pipeline(big.export({ tables: [TABLE], format: 'ndjson' }), countingSink())
          exportsCompleted++
        }
      })()
      during.push(await closedLoop(op, { concurrency: settings.concurrency, seconds: settings.seconds }))
      stop = true
      await exporter
    }
  } finally {
    await keel.close()
  }
  const p99Alone = median(alone.map((r) => r.latency.p99Ms))
  const p99During = median(during.map((r) => r.latency.p99Ms))
  return {
    alone,
    duringExport: during,
    p99AloneMs: p99Alone,
    p99DuringMs: p99During,
    ratio: p99During / p99Alone,
    exportsCompleted,
  }
}

async function main(): Promise<number> {
  if (process.argv[2] === '--child') {
    const result = await runChild(process.argv[3] as VariantKey)
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return 0
  }
  const started = performance.now()
  const meta = machineMeta()
  console.log(`export bench: ${settings.rows} rows for ${BIG}; load average ${meta.loadAverage.join(' ')}`)
  await setup()
  const runs = new Map<VariantKey, ChildResult[]>()
  const keys = Object.keys(VARIANTS) as VariantKey[]
  for (let round = 0; round < settings.rounds; round++) {
    for (const key of round % 2 === 0 ? keys : [...keys].reverse()) {
      const r = await spawnChild(key)
      console.log(
        `  round ${round + 1} ${key}: ${fmt(r.ms, 0)} ms, ${fmtInt(r.rows)} rows, peak RSS ${fmt(r.peakRssMB, 0)} MB`,
      )
      runs.set(key, [...(runs.get(key) ?? []), r])
    }
  }
  const variants = keys.map((key): VariantSummary => {
    const rs = runs.get(key)!
    const ms = median(rs.map((r) => r.ms))
    return {
      key,
      label: VARIANTS[key],
      rows: rs[0]!.rows,
      bytes: rs[0]!.bytes,
      medianMs: ms,
      rowsPerS: rs[0]!.rows / (ms / 1_000),
      mbPerS: rs[0]!.bytes / 2 ** 20 / (ms / 1_000),
      peakRssMB: median(rs.map((r) => r.peakRssMB)),
      peakRssOverBaseMB: median(rs.map((r) => r.peakRssMB - r.baseRssMB)),
      peakHeapMB: median(rs.map((r) => r.peakHeapMB)),
      runs: rs,
    }
  })
  const by = (k: VariantKey) => variants.find((v) => v.key === k)!
  const ratios = {
    ndjsonVsCopyText: by('copy-text').medianMs / by('keel-ndjson').medianMs,
    csvVsCopyCsv: by('copy-csv').medianMs / by('keel-csv').medianMs,
  }
  console.log('other tenants while the export runs...')
  const others = await othersP99()
  const results: Results = { meta, settings, variants, ratios, others }
  return finishRun(
    'issue-15-export',
    'Export throughput and neighbours (issue #15)',
    results,
    started,
    (r) => [
      `keel ndjson ${fmtRatio(r.ratios.ndjsonVsCopyText)} of raw COPY text (goal >= 0.8x); keel csv ${fmtRatio(r.ratios.csvVsCopyCsv)} of raw COPY CSV`,
      `others' p99 ${fmt(r.others.p99AloneMs)} ms alone, ${fmt(r.others.p99DuringMs)} ms during the export (${fmtRatio(r.others.ratio)}; goal <= 1.5x)`,
    ],
    render,
    false,
  )
}

function render(r: Results): string {
  const rows = r.variants.map((v) => [
    v.label,
    fmtInt(v.rows),
    fmt(v.bytes / 2 ** 20, 1),
    fmt(v.medianMs, 0),
    fmtInt(v.rowsPerS),
    fmt(v.mbPerS, 1),
    v.key === 'keel-ndjson'
      ? fmtRatio(r.ratios.ndjsonVsCopyText)
      : v.key === 'keel-csv'
        ? fmtRatio(r.ratios.csvVsCopyCsv)
        : v.key.startsWith('copy')
          ? '1.00x'
          : fmtRatio(r.variants.find((x) => x.key === 'copy-text')!.medianMs / v.medianMs),
    fmt(v.peakRssMB, 0),
    fmt(v.peakRssOverBaseMB, 0),
    fmt(v.peakHeapMB, 0),
  ])
  const o = r.others
  return `Measured ${r.meta.date.slice(0, 16).replace('T', ' ')} UTC on ${r.meta.cores} cores (${r.meta.cpuModel}), Node ${r.meta.node}, **under load** (other helpers' suites share the machine): load average ${r.meta.loadAverage.join(' ')} at the start, ${r.meta.loadAverageEnd?.join(' ') ?? '?'} at the end. One tenant's ${fmtInt(r.settings.rows)} rows (7 columns: text, bigint, numeric, timestamptz, jsonb) under RLS as the app role, into a sink that discards; each variant in its own process, ${r.settings.rounds} alternating rounds, median time; keel's batch size ${r.settings.batchSize ?? 'default'}.

${markdownTable(
  [
    'variant',
    'rows',
    'MB out',
    'median ms',
    'rows/s',
    'MB/s',
    'vs COPY',
    'peak RSS MB',
    'RSS over start MB',
    'peak heap MB',
  ],
  rows,
  [false, true, true, true, true, true, true, true, true, true],
)}

"vs COPY": keel ndjson against COPY text, keel csv against COPY CSV, the buffered query against COPY text (same rows; the output formats differ in size).

Other tenants (${r.settings.smallTenants} tenants, point selects by id under RLS, ${r.settings.concurrency} callers, the same keel, pool max 10): p99 ${fmt(o.p99AloneMs)} ms alone, ${fmt(o.p99DuringMs)} ms while ${BIG}'s export runs back to back in the same process (**${fmtRatio(o.ratio)}**; goal <= 1.5x); median of ${r.settings.rounds} rounds of ${r.settings.seconds} s, ${o.exportsCompleted} exports completed meanwhile. Throughput alone ${fmtInt(median(o.alone.map((x) => x.qps)))} q/s, during ${fmtInt(median(o.duringExport.map((x) => x.qps)))} q/s.
`
}

runMain(main)
