/**
 * Backfill benchmark (issue #14): the app's write latency while a 200k-row table gets a new column's values,
 * with keel's ctx.backfill (keyset batches of 1000, each its own transaction, lag-throttled) vs one
 * `UPDATE table SET ...` statement. App clients update random rows of the same table in a loop throughout;
 * their p99 in each phase vs a phase with no backfill. Writes bench/results/issue-14-backfill.{json,md}.
 *
 *   node bench/dist/backfill.js
 *
 * Environment: BENCH_BACKFILL_ROWS (200000), BENCH_BACKFILL_APP_CLIENTS (4), BENCH_BACKFILL_BATCH (1000),
 * BENCH_BACKFILL_BASELINE_SECONDS (5). It GRANTs pg_monitor to keel_owner (the backfill reads replica lag in
 * pg_stat_replication). A benchmark: it never fails on timings.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMigrator } from '@keel/migrate'
import { startAppProcess } from './lib/app-process.js'
import { envNumber } from './lib/env.js'
import { loadNote, machineMeta } from './lib/machine.js'
import { fmt, fmtRatio, markdownTable } from './lib/report.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import type { LatencySummary } from './lib/stats.js'
import { withClient } from './lib/with-client.js'

const settings = {
  rows: Math.round(envNumber('BENCH_BACKFILL_ROWS', 200_000)),
  appClients: Math.round(envNumber('BENCH_BACKFILL_APP_CLIENTS', 4)),
  batchSize: Math.round(envNumber('BENCH_BACKFILL_BATCH', 1000)),
  baselineSeconds: envNumber('BENCH_BACKFILL_BASELINE_SECONDS', 5),
  maxReplicaLagMs: 5000,
}
const TABLE = 'bench_backfill'

interface Phase {
  name: string
  wallS: number
  app: LatencySummary
  appWrites: number
}

interface Results {
  meta: ReturnType<typeof machineMeta> & { loadAverageEnd?: number[] }
  settings: typeof settings
  phases: Phase[]
  totalS?: number
}

async function phase(name: string, url: string, body: () => Promise<void>): Promise<Phase> {
  // The app in a process of its own, writing before the phase starts.
  const load = await startAppProcess({
    url,
    clients: settings.appClients,
    sql: `UPDATE ${TABLE} SET v = v + 1 WHERE id = $1`,
    maxParam: settings.rows,
  })
  await new Promise((r) => setTimeout(r, 500))
  const t0 = performance.now()
  await body()
  const wallS = (performance.now() - t0) / 1_000
  const { app, queries: writes } = await load.stop()
  console.log(
    `${name}: ${fmt(wallS)} s, app writes p50 ${fmt(app.p50Ms)} ms p99 ${fmt(app.p99Ms)} ms max ${fmt(app.maxMs)} ms`,
  )
  return { name, wallS, app, appWrites: writes }
}

async function main(): Promise<number> {
  const started = performance.now()
  const stack = readStack()
  const owner = stack.primary.ownerUrl
  const results: Results = { meta: machineMeta(), settings, phases: [] }
  await withClient(stack.primary.superUrl, (c) => c.query('GRANT pg_monitor TO keel_owner'))
  const reset = () =>
    withClient(owner, async (c) => {
      await c.query(`DROP TABLE IF EXISTS ${TABLE}`)
      await c.query(`CREATE TABLE ${TABLE} (id bigserial PRIMARY KEY, v int NOT NULL, w int)`)
      await c.query(`INSERT INTO ${TABLE} (v) SELECT g FROM generate_series(1, ${settings.rows}) g`)
      await c.query(`ANALYZE ${TABLE}`)
      // The app's writes go through the runtime role, like the app's.
      await c.query(`GRANT SELECT, UPDATE ON ${TABLE} TO keel_app`)
    })
  console.log(`backfill: ${settings.rows} rows, ${settings.appClients} app clients updating random rows`)

  await reset()
  results.phases.push(
    await phase(
      'no backfill',
      stack.primary.url,
      () => new Promise((r) => setTimeout(r, settings.baselineSeconds * 1_000)),
    ),
  )

  const id = `0001_bench_backfill_${Date.now()}`
  const dir = mkdtempSync(join(tmpdir(), 'keel-bench-backfill-'))
  mkdirSync(join(dir, 'shared'))
  writeFileSync(
    join(dir, 'shared', `${id}.mjs`),
    `export const transaction = false
export async function up(ctx) {
  await ctx.backfill({ table: '${TABLE}', set: { w: 'v * 2' }, batchSize: ${settings.batchSize}, maxReplicaLagMs: ${settings.maxReplicaLagMs} })
}`,
  )
  results.phases.push(
    await phase(`keel ctx.backfill (batches of ${settings.batchSize})`, stack.primary.url, async () => {
      const m = createMigrator({ connection: owner, dir, lint: 'off' })
      const r = await m.up()
      await m.close()
      if (r.failed.length > 0) throw r.failed[0]!.error
    }),
  )

  await reset()
  results.phases.push(
    await phase('one UPDATE statement', stack.primary.url, async () => {
      await withClient(owner, (c) => c.query(`UPDATE ${TABLE} SET w = v * 2`))
    }),
  )

  await withClient(owner, async (c) => {
    await c.query(`DROP TABLE IF EXISTS ${TABLE}`)
    await c.query(
      "DELETE FROM keel_migrate.ledger WHERE scope = 'shared' AND id LIKE '0001_bench_backfill_%'",
    )
  })
  await withClient(stack.primary.superUrl, (c) => c.query('REVOKE pg_monitor FROM keel_owner'))

  return finishRun(
    'issue-14-backfill',
    'Backfill (issue #14): keel ctx.backfill vs one UPDATE, the app writing to the same table',
    results,
    started,
    (r) => {
      const base = r.phases[0]!.app.p99Ms
      return r.phases
        .slice(1)
        .map(
          (p) => `${p.name}: ${fmt(p.wallS)} s; app write p99 ${fmtRatio(p.app.p99Ms / base)} of no backfill`,
        )
    },
    render,
    false,
  )
}

function render(r: Results): string {
  const base = r.phases[0]!
  const table = markdownTable(
    [
      'phase',
      'wall time (s)',
      'app writes',
      'app p50 (ms)',
      'app p99 (ms)',
      'app max (ms)',
      'app p99 vs no backfill',
    ],
    r.phases.map((p) => [
      p.name,
      fmt(p.wallS),
      String(p.appWrites),
      fmt(p.app.p50Ms),
      fmt(p.app.p99Ms),
      fmt(p.app.maxMs),
      fmtRatio(p.app.p99Ms / base.app.p99Ms),
    ]),
    [false, true, true, true, true, true, true],
  )
  return `A ${r.settings.rows}-row table on the local stack's primary (two streaming replicas, one with a 1.5 s apply delay). ${r.settings.appClients} app clients (the runtime role, in a process of their own) update random rows of it in a loop (autocommit, one row each) throughout; a new column \`w\` is filled with \`v * 2\` for every row, by keel's \`ctx.backfill\` (keyset batches of ${r.settings.batchSize}, each its own transaction with lock_timeout, waiting while a replica lags more than ${r.settings.maxReplicaLagMs} ms) or by one \`UPDATE ${TABLE} SET w = v * 2\`.

Run: ${loadNote(r.meta)}.

${table}

Reading: the single UPDATE locks every row it touches until it commits, so an app write to any row it has
reached waits for the whole statement: the app's tail latency becomes the UPDATE's duration. The backfill
holds at most one batch's rows, for one short transaction, so an app write waits at most one batch; it takes
longer in wall time (a commit and a lag check per batch) and that is the trade. On a table of 100M rows the
single UPDATE is also one transaction of that size: WAL the replicas must replay at once (their lag jumps by
the whole statement), dead tuples vacuum cannot clean until it ends.

Machine: ${r.meta.cpuModel}, ${r.meta.cores} cores shared with other work (load average at start ${r.meta.loadAverage.join(', ')}, end ${r.meta.loadAverageEnd?.join(', ') ?? 'n/a'}), Node ${r.meta.node}, ${r.meta.date}.
`
}

runMain(main)
