/**
 * Export (issue #15), side by side in one run:
 *
 * 1. Throughput: one big tenant's rows (RLS, the app role) out of Postgres into a sink that counts bytes,
 *    through a raw `COPY (SELECT * ...) TO STDOUT` (pg-copy-streams; text and CSV), a raw COPY of the
 *    very statement keel sends (read off pg_stat_activity while a keel export runs: the same bytes, so
 *    the difference is keel's own cost), keel's db.export() (ndjson and csv) and a buffered
 *    `pool.query` written out as ndjson afterwards. Each variant runs in
 *    its own child process (so peak RSS and heap are its own), alternating, medians over rounds.
 * 2. Other tenants' p99 (point selects, many small tenants, the same keel) alone and while the big
 *    tenant's export runs back to back in the same process, unpaced and paced (maxRowsPerSecond).
 *
 *   bash scripts/bench.sh export
 *
 * Environment: BENCH_EXPORT_ROWS (300000), BENCH_ROUNDS (3), BENCH_SECONDS (4), BENCH_CONCURRENCY (8),
 * BENCH_EXPORT_BATCH (keel's default), BENCH_EXPORT_PACES (10000,25000,50000: maxRowsPerSecond of the paced runs), BENCH_NEIGHBOUR_ROUNDS (5). A benchmark, not a test: it never fails on timings.
 *
 * The fixture (lib/export-fixture.ts) and the neighbours' run (lib/export-neighbours.ts) live apart; this
 * file stays one piece (about 330 lines) on purpose: it re-runs itself as the child of each variant
 * (`--child <variant>`), so the variants, the parent's rounds and the report share one entry point.
 */
import { spawn } from 'node:child_process'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import type { ExportProgressEvent } from '@keel/core'
import pg from 'pg'
import { to as copyTo } from 'pg-copy-streams'
import {
  appKeel,
  BIG,
  countingSink,
  type KeelStatements,
  keelStatements,
  settings,
  setup,
  TABLE,
} from './lib/export-fixture.js'
import { type Neighbours, othersP99 } from './lib/export-neighbours.js'
import { loadNote, machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const VARIANTS = {
  'copy-text': 'raw COPY (SELECT *) TO STDOUT, text (pg-copy-streams)',
  'copy-keel-ndjson': "raw COPY of keel's own ndjson statement (same bytes)",
  'keel-ndjson': "keel db.export({ format: 'ndjson' })",
  'copy-csv': 'raw COPY (SELECT *) TO STDOUT WITH CSV HEADER',
  'copy-keel-csv': "raw COPY of keel's own csv statement (same bytes)",
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
        const statement = variant.startsWith('copy-keel')
          ? process.env.BENCH_EXPORT_STATEMENT!
          : `COPY (SELECT * FROM ${TABLE}) TO STDOUT${csv}`
        await pipeline(client.query(copyTo(statement)), sink)
        // CSV has a header line (no cell of this table holds a line break).
        rows = sink.lines - (variant === 'copy-csv' || variant === 'copy-keel-csv' ? 1 : 0)
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

function spawnChild(variant: VariantKey, statements: KeelStatements): Promise<ChildResult> {
  const statement =
    variant === 'copy-keel-ndjson' ? statements.ndjson : variant === 'copy-keel-csv' ? statements.csv : ''
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', fileURLToPath(import.meta.url), '--child', variant],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, BENCH_EXPORT_STATEMENT: statement },
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
  statements: KeelStatements
  ratios: { ndjsonVsCopyText: number; csvVsCopyCsv: number; ndjsonVsSame: number; csvVsSame: number }
  others: Neighbours[]
  totalS?: number
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
  const statements = await keelStatements()
  const runs = new Map<VariantKey, ChildResult[]>()
  const keys = Object.keys(VARIANTS) as VariantKey[]
  for (let round = 0; round < settings.rounds; round++) {
    for (const key of round % 2 === 0 ? keys : [...keys].reverse()) {
      const r = await spawnChild(key, statements)
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
    ndjsonVsSame: by('copy-keel-ndjson').medianMs / by('keel-ndjson').medianMs,
    csvVsSame: by('copy-keel-csv').medianMs / by('keel-csv').medianMs,
  }
  console.log('other tenants while the export runs, unpaced then paced...')
  const others = await othersP99([undefined, ...settings.paces])
  const results: Results = { meta, settings, statements, variants, ratios, others }
  return finishRun(
    'issue-15-export',
    'Export throughput and neighbours (issue #15)',
    results,
    started,
    (r) => [
      `keel ndjson ${fmtRatio(r.ratios.ndjsonVsSame)} of a raw COPY of the same statement, ${fmtRatio(r.ratios.ndjsonVsCopyText)} of raw COPY text; keel csv ${fmtRatio(r.ratios.csvVsSame)} of the same statement, ${fmtRatio(r.ratios.csvVsCopyCsv)} of raw COPY CSV (goal >= 0.8x)`,
      ...r.others.map(
        (o) =>
          `others' p99 ${fmt(o.p99AloneMs)} ms alone, ${fmt(o.p99DuringMs)} ms during the export ${paceLabel(o.pace)} (${fmtRatio(o.ratio)}; goal <= 1.5x)`,
      ),
    ],
    render,
    false,
  )
}

function paceLabel(pace: number | undefined): string {
  return pace === undefined ? 'unpaced' : `paced at ${fmtInt(pace)} rows/s`
}

function vsCopy(r: Results, v: VariantSummary): string {
  const base = (k: VariantKey) => r.variants.find((x) => x.key === k)!.medianMs / v.medianMs
  switch (v.key) {
    case 'keel-ndjson':
      return `${fmtRatio(r.ratios.ndjsonVsSame)} (${fmtRatio(r.ratios.ndjsonVsCopyText)} of text)`
    case 'keel-csv':
      return `${fmtRatio(r.ratios.csvVsSame)} (${fmtRatio(r.ratios.csvVsCopyCsv)} of CSV)`
    case 'copy-keel-ndjson':
      return fmtRatio(base('copy-text'))
    case 'copy-keel-csv':
      return fmtRatio(base('copy-csv'))
    case 'buffered':
      return fmtRatio(base('copy-text'))
    default:
      return '1.00x'
  }
}

function render(r: Results): string {
  const rows = r.variants.map((v) => [
    v.label,
    fmtInt(v.rows),
    fmt(v.bytes / 2 ** 20, 1),
    fmt(v.medianMs, 0),
    fmtInt(v.rowsPerS),
    fmt(v.mbPerS, 1),
    vsCopy(r, v),
    fmt(v.peakRssMB, 0),
    fmt(v.peakRssOverBaseMB, 0),
    fmt(v.peakHeapMB, 0),
  ])
  return `Measured ${r.meta.date.slice(0, 16).replace('T', ' ')} UTC on ${r.meta.cores} cores (${r.meta.cpuModel}), Node ${r.meta.node}, ${loadNote(r.meta)}: load average ${r.meta.loadAverage.join(' ')} at the start, ${r.meta.loadAverageEnd?.join(' ') ?? '?'} at the end. One tenant's ${fmtInt(r.settings.rows)} rows (7 columns: text, bigint, numeric, timestamptz, jsonb) under RLS as the app role, into a sink that discards; each variant in its own process, ${r.settings.rounds} alternating rounds, median time; keel's batch size ${r.settings.batchSize ?? 'default'}.

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

"vs COPY": keel's rows against a raw COPY of the very statement keel sends (the same bytes: what keel itself costs), and in brackets against COPY's own text or CSV of \`SELECT *\` (Postgres does less work there: no JSON, timestamps in DateStyle's form); keel's statements against those; the buffered query against COPY text (same rows; the output formats differ in size).

Other tenants (${r.settings.smallTenants} tenants, point selects by id under RLS, ${r.settings.concurrency} callers, the same keel, pool max 10) alone and while ${BIG}'s ndjson export runs back to back in the same process, unpaced and at each pace; ${r.settings.neighbourRounds} rounds, each measuring every phase for ${r.settings.seconds} s in a rotating order (so the machine's drifts weigh on all alike); medians:

${markdownTable(
  [
    'export',
    'others p99 alone ms',
    'p99 during ms',
    'ratio (goal <= 1.5x)',
    'q/s alone',
    'q/s during',
    'export rows/s',
    'exports done',
  ],
  r.others.map((o) => [
    paceLabel(o.pace),
    fmt(o.p99AloneMs),
    fmt(o.p99DuringMs),
    fmtRatio(o.ratio),
    fmtInt(median(o.alone.map((x) => x.qps))),
    fmtInt(median(o.duringExport.map((x) => x.qps))),
    fmtInt(o.exportRowsPerS),
    String(o.exportsCompleted),
  ]),
  [false, true, true, true, true, true, true, true],
)}
`
}

runMain(main)
