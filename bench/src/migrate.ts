/**
 * Fleet migration benchmark (issue #14): wall time to migrate N tenant schemas x 3 migrations (a table with
 * rows, an ADD COLUMN, a CREATE INDEX CONCURRENTLY) with @keel/migrate at concurrency 1, 2 and 4, against
 * a sequential one-connection runner (search_path + BEGIN/COMMIT per file, a ledger row, no lock_timeout:
 * what a bash loop over --schema does). Meanwhile app clients read a per-tenant table of a random tenant:
 * their p99 during each fleet run vs without one. Writes bench/results/issue-14-migrate.{json,md}.
 *
 *   node bench/dist/migrate.js
 *
 * Each run also samples the machine's CPU (/proc/stat) and what the app's backends wait on
 * (pg_stat_activity.wait_event_type, as the superuser), to tell CPU saturation from lock or catalog waits.
 *
 * Environment: BENCH_MIGRATE_SCHEMAS (500), BENCH_MIGRATE_APP_CLIENTS (4), BENCH_MIGRATE_BASELINE_SECONDS (5),
 * BENCH_MIGRATE_PAUSE_MS (20: pauseBetweenTenantsMs of the paced variant), BENCH_MIGRATE_VARIANTS (comma list
 * of sequential,keel-1,keel-2,keel-4,keel-4-paced). A benchmark: it never fails on timings.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMigrator } from '@keel/migrate'
import pg from 'pg'
import { startAppProcess } from './lib/app-process.js'
import { envNumber } from './lib/env.js'
import { loadNote, machineMeta } from './lib/machine.js'
import { fmt, fmtRatio, markdownTable } from './lib/report.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { type LatencySummary, median } from './lib/stats.js'
import { withClient } from './lib/with-client.js'

const settings = {
  schemas: Math.round(envNumber('BENCH_MIGRATE_SCHEMAS', 500)),
  pauseMs: Math.round(envNumber('BENCH_MIGRATE_PAUSE_MS', 20)),
  appClients: Math.round(envNumber('BENCH_MIGRATE_APP_CLIENTS', 4)),
  baselineSeconds: envNumber('BENCH_MIGRATE_BASELINE_SECONDS', 4),
  rounds: Math.round(envNumber('BENCH_MIGRATE_ROUNDS', 2)),
  rowsPerTenant: 500,
}
const ALL = ['sequential', 'keel-1', 'keel-2', 'keel-4', 'keel-4-paced'] as const
type Variant = (typeof ALL)[number]
const variants = (process.env.BENCH_MIGRATE_VARIANTS?.split(',') ?? ALL).filter((v): v is Variant =>
  (ALL as readonly string[]).includes(v),
)

const PREFIX = 'bench_mig_'
const ids = Array.from({ length: settings.schemas }, (_, i) => `${PREFIX}${String(i).padStart(4, '0')}`)
const schemaOf = (id: string) => `tenant_${id}`

const MIGRATIONS: Array<[string, string]> = [
  [
    '0001_items',
    `CREATE TABLE items (id bigserial PRIMARY KEY, v int NOT NULL); INSERT INTO items (v) SELECT generate_series(1, ${settings.rowsPerTenant});`,
  ],
  ['0002_items_w', 'ALTER TABLE items ADD COLUMN w int;'],
  ['0003_items_v_idx', 'CREATE INDEX CONCURRENTLY items_v_idx ON items (v);'],
]

interface Row {
  variant: Variant
  round: number
  /** The app's p99 in the baseline window just before this run (the load moves; each run has its own). */
  baselineP99Ms: number
  wallS: number
  tenantsPerS: number
  failed: number
  app: LatencySummary
  /** Busy share of the machine's CPUs during the run (all cores). */
  cpuBusy: number | undefined
  /** What the app's active backends were doing, by sampled share: 'CPU' (no wait event), 'Lock', 'LWLock', 'IO', ... */
  appWaits: Record<string, number>
}

interface Results {
  meta: ReturnType<typeof machineMeta> & { loadAverageEnd?: number[] }
  settings: typeof settings
  baseline: LatencySummary | undefined
  baselineCpuBusy?: number | undefined
  baselineWaits?: Record<string, number>
  rows: Row[]
  totalS?: number
}

/** Fresh schemas, each with an `accounts` table the app reads during the run; no ledger rows. */
async function resetFleet(ownerUrl: string): Promise<void> {
  await withClient(ownerUrl, async (c) => {
    const old = await c.query<{ nspname: string }>('SELECT nspname FROM pg_namespace WHERE nspname LIKE $1', [
      `tenant_${PREFIX}%`,
    ])
    for (const r of old.rows) await c.query(`DROP SCHEMA "${r.nspname}" CASCADE`)
    await c
      .query("DELETE FROM keel_migrate.ledger WHERE scope LIKE 'schema:tenant_bench_mig_%'")
      .catch(() => undefined)
    await c.query('DROP TABLE IF EXISTS public.bench_naive_ledger')
    await c.query('CREATE TABLE public.bench_naive_ledger (scope text, id text, PRIMARY KEY (scope, id))')
    for (const id of ids) {
      const s = schemaOf(id)
      await c.query(
        `CREATE SCHEMA "${s}"; CREATE TABLE "${s}".accounts (id int PRIMARY KEY, name text);
         INSERT INTO "${s}".accounts SELECT g, 'a' || g FROM generate_series(1, 50) g;
         GRANT USAGE ON SCHEMA "${s}" TO keel_app; GRANT SELECT ON "${s}".accounts TO keel_app;`,
      )
    }
  })
}

/** App clients (the runtime role) reading a random tenant's accounts, in a process of their own, until stopped. */
async function appLoad(appUrl: string): Promise<{ stop: () => Promise<LatencySummary> }> {
  const load = await startAppProcess({
    url: appUrl,
    clients: settings.appClients,
    sql: 'SELECT name FROM {table} WHERE id = $1',
    maxParam: 50,
    tables: ids.map((id) => `"${schemaOf(id)}".accounts`),
  })
  return { stop: async () => (await load.stop()).app }
}

/** Machine CPU ticks (busy, total) from /proc/stat; undefined off Linux. */
function cpuTicks(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    const idle = (v[3] ?? 0) + (v[4] ?? 0)
    const total = v.reduce((a, b) => a + b, 0)
    return { busy: total - idle, total }
  } catch {
    return undefined
  }
}

/**
 * Samples what the app's backends (keel_app) wait on every 20 ms, as the superuser (other roles see no
 * wait events of other users' sessions), and the machine's CPU busy share over the window.
 */
function observe(superUrl: string): {
  stop: () => Promise<{ cpuBusy: number | undefined; waits: Record<string, number> }>
} {
  const t0 = cpuTicks()
  const counts: Record<string, number> = {}
  let samples = 0
  let running = true
  const loop = (async () => {
    const c = new pg.Client({ connectionString: superUrl })
    await c.connect()
    try {
      while (running) {
        const r = await c.query<{ w: string | null }>(
          "SELECT wait_event_type AS w FROM pg_stat_activity WHERE usename = 'keel_app' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        for (const row of r.rows) {
          const k = row.w ?? 'CPU'
          counts[k] = (counts[k] ?? 0) + 1
          samples++
        }
        await new Promise((res) => setTimeout(res, 20))
      }
    } finally {
      await c.end()
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      const t1 = cpuTicks()
      const cpuBusy =
        t0 && t1 && t1.total > t0.total ? (t1.busy - t0.busy) / (t1.total - t0.total) : undefined
      const waits: Record<string, number> = {}
      for (const [k, n] of Object.entries(counts)) waits[k] = samples > 0 ? n / samples : 0
      return { cpuBusy, waits }
    },
  }
}

const fmtWaits = (w: Record<string, number>) =>
  Object.entries(w)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${Math.round(v * 100)}%`)
    .join(', ') || 'n/a'

async function sequentialRunner(ownerUrl: string): Promise<number> {
  let failed = 0
  await withClient(ownerUrl, async (c) => {
    for (const id of ids) {
      const s = schemaOf(id)
      try {
        for (const [mid, sql] of MIGRATIONS) {
          await c.query(`SET search_path = "${s}"`)
          if (sql.includes('CONCURRENTLY')) {
            await c.query(sql)
            await c.query('INSERT INTO public.bench_naive_ledger VALUES ($1, $2)', [s, mid])
          } else {
            await c.query('BEGIN')
            await c.query(sql)
            await c.query('INSERT INTO public.bench_naive_ledger VALUES ($1, $2)', [s, mid])
            await c.query('COMMIT')
          }
        }
      } catch {
        await c.query('ROLLBACK').catch(() => undefined)
        failed++
      }
    }
  })
  return failed
}

async function main(): Promise<number> {
  const started = performance.now()
  const stack = readStack()
  const dir = mkdtempSync(join(tmpdir(), 'keel-bench-migrate-'))
  mkdirSync(join(dir, 'tenant'))
  for (const [id, sql] of MIGRATIONS) writeFileSync(join(dir, 'tenant', `${id}.sql`), sql)
  const results: Results = { meta: machineMeta(), settings, baseline: undefined, rows: [] }

  console.log(
    `fleet migration: ${settings.schemas} schemas x ${MIGRATIONS.length} migrations, ${settings.rounds} round(s), the app in its own process`,
  )
  for (let round = 1; round <= settings.rounds; round++) {
    // Alternate the order between rounds so a drift of the machine's load does not favour one variant.
    const order = round % 2 === 1 ? variants : [...variants].reverse()
    for (const variant of order) {
      await resetFleet(stack.primary.ownerUrl)
      const load = await appLoad(stack.primary.url)
      // The baseline of this run: the same app, the same fleet, just before the migration starts.
      const baseObs = observe(stack.primary.superUrl)
      const baseLoad = load
      await new Promise((r) => setTimeout(r, settings.baselineSeconds * 1_000))
      const base = await baseLoad.stop()
      const baseSeen = await baseObs.stop()
      if (results.baseline === undefined || round === 1) {
        results.baseline = base
        results.baselineCpuBusy = baseSeen.cpuBusy
        results.baselineWaits = baseSeen.waits
      }
      const run = await appLoad(stack.primary.url)
      const obs = observe(stack.primary.superUrl)
      const t0 = performance.now()
      let failed: number
      if (variant === 'sequential') {
        failed = await sequentialRunner(stack.primary.ownerUrl)
      } else {
        const migrator = createMigrator({
          connection: stack.primary.ownerUrl,
          dir,
          tenancy: { mode: 'schema' },
          tenants: ids,
          concurrency: Number(variant.split('-')[1]),
          pauseBetweenTenantsMs: variant.endsWith('-paced') ? settings.pauseMs : 0,
          lint: 'off',
        })
        const r = await migrator.up()
        failed = r.failed.length
        await migrator.close()
      }
      const wallS = (performance.now() - t0) / 1_000
      const app = await run.stop()
      const seen = await obs.stop()
      results.rows.push({
        variant,
        round,
        baselineP99Ms: base.p99Ms,
        wallS,
        tenantsPerS: settings.schemas / wallS,
        failed,
        app,
        cpuBusy: seen.cpuBusy,
        appWaits: seen.waits,
      })
      console.log(
        `round ${round} ${variant}: ${fmt(wallS)} s (${fmt(settings.schemas / wallS, 1)} tenants/s), ${failed} failed, app p99 ${fmt(app.p99Ms)} ms vs ${fmt(base.p99Ms)} ms just before (${fmtRatio(app.p99Ms / base.p99Ms)}), CPU busy ${fmt((seen.cpuBusy ?? Number.NaN) * 100, 0)}% (before: ${fmt((baseSeen.cpuBusy ?? Number.NaN) * 100, 0)}%), app backends: ${fmtWaits(seen.waits)}`,
      )
    }
  }
  await resetFleet(stack.primary.ownerUrl)
  await withClient(stack.primary.ownerUrl, async (c) => {
    const old = await c.query<{ nspname: string }>('SELECT nspname FROM pg_namespace WHERE nspname LIKE $1', [
      `tenant_${PREFIX}%`,
    ])
    for (const r of old.rows) await c.query(`DROP SCHEMA "${r.nspname}" CASCADE`)
    await c.query('DROP TABLE IF EXISTS public.bench_naive_ledger')
  })

  return finishRun(
    'issue-14-migrate',
    'Fleet migration (issue #14): @keel/migrate vs a sequential runner',
    results,
    started,
    (r) =>
      aggregate(r).map(
        (x) =>
          `${x.variant}: ${fmt(x.wallS)} s (median of ${x.runs}); app p99 ${fmtRatio(x.ratio)} of the app alone (median; runs ${x.ratios.map((v) => fmtRatio(v)).join(', ')})`,
      ),
    (r) => render(r),
    false,
  )
}

function label(variant: Variant, pauseMs: number): string {
  if (variant === 'sequential') return 'sequential, one connection'
  const [, n] = variant.split('-')
  return `keel, concurrency ${n}${variant.endsWith('-paced') ? `, pauseBetweenTenantsMs ${pauseMs}` : ''}`
}

interface Aggregate {
  variant: Variant
  runs: number
  wallS: number
  failed: number
  p50Ms: number
  p99Ms: number
  baselineP99Ms: number
  ratio: number
  ratios: number[]
  cpuBusy: number
  appWaits: Record<string, number>
}

/** Per variant, the median over rounds of wall time and of the app's p99 ratio to its own adjacent baseline. */
function aggregate(r: Results): Aggregate[] {
  return variants.map((variant) => {
    const rows = r.rows.filter((x) => x.variant === variant)
    const waits: Record<string, number> = {}
    for (const row of rows)
      for (const [k, v] of Object.entries(row.appWaits)) waits[k] = (waits[k] ?? 0) + v / rows.length
    const ratios = rows.map((x) => x.app.p99Ms / x.baselineP99Ms)
    return {
      variant,
      runs: rows.length,
      wallS: median(rows.map((x) => x.wallS)),
      failed: rows.reduce((n, x) => n + x.failed, 0),
      p50Ms: median(rows.map((x) => x.app.p50Ms)),
      p99Ms: median(rows.map((x) => x.app.p99Ms)),
      baselineP99Ms: median(rows.map((x) => x.baselineP99Ms)),
      ratio: median(ratios),
      ratios,
      cpuBusy: median(rows.map((x) => x.cpuBusy ?? Number.NaN)),
      appWaits: waits,
    }
  })
}

function render(r: Results): string {
  const agg = aggregate(r)
  const seq = agg.find((x) => x.variant === 'sequential')
  const table = markdownTable(
    [
      'runner',
      'wall time (s)',
      'tenants/s',
      'vs sequential',
      'failed',
      'app p50 (ms)',
      'app p99 (ms)',
      'app p99 alone (ms)',
      'app p99 vs alone (median; each run)',
      'machine CPU busy',
      'app backends were',
    ],
    agg.map((x) => [
      label(x.variant, r.settings.pauseMs),
      fmt(x.wallS),
      fmt(r.settings.schemas / x.wallS, 1),
      seq ? fmtRatio(seq.wallS / x.wallS) : 'n/a',
      String(x.failed),
      fmt(x.p50Ms),
      fmt(x.p99Ms),
      fmt(x.baselineP99Ms),
      `${fmtRatio(x.ratio)} (${x.ratios.map((v) => fmtRatio(v)).join(', ')})`,
      `${fmt(x.cpuBusy * 100, 0)}%`,
      fmtWaits(x.appWaits),
    ]),
    [false, true, true, true, true, true, true, true, false, true, false],
  )
  return `${r.settings.schemas} tenant schemas x 3 migrations (CREATE TABLE + ${r.settings.rowsPerTenant} rows, ADD COLUMN, CREATE INDEX CONCURRENTLY), on the local stack's primary. ${r.settings.appClients} app clients (the runtime role, in a process of their own) read a random tenant's table throughout. Each run is preceded by ${r.settings.baselineSeconds} s of the same app alone ("app p99 alone"): the ratio compares the app's p99 during the run with that adjacent window, because the machine's load drifts between runs. ${r.settings.rounds} rounds, the order of variants alternating; medians, with each run's ratio in brackets. Machine CPU busy during the first baseline: ${fmt((r.baselineCpuBusy ?? Number.NaN) * 100, 0)}% (app backends: ${fmtWaits(r.baselineWaits ?? {})}). "App backends were": the share of samples (every 20 ms, pg_stat_activity as the superuser) in which an active app backend was running on CPU (no wait event) or waiting on a Lock, an LWLock, IO, ...

Run: ${loadNote(r.meta)}.

${table}

keel runs each tenant with its advisory lock, a ledger row per migration in the migration's transaction,
lock_timeout/statement_timeout per transaction, a stepwise run for the concurrent index and an INVALID-index
scan per tenant; the sequential runner does none of that (and has no lock_timeout).

${reading(r)}

Machine: ${r.meta.cpuModel}, ${r.meta.cores} cores shared with other work (load average at start ${r.meta.loadAverage.join(', ')}, end ${r.meta.loadAverageEnd?.join(', ') ?? 'n/a'}), Node ${r.meta.node}, ${r.meta.date}. Run: \`bash scripts/bench.sh migrate\` (this and the backfill benchmark: about 6 minutes on a quiet machine, 11 under this load).
`
}

// What the numbers say. The verdict on the goal is computed from this run's medians; the rest explains
// what the columns show and does not depend on one run's numbers.
function reading(r: Results): string {
  const name = (x: Aggregate) => label(x.variant, r.settings.pauseMs)
  const keelRuns = aggregate(r).filter((x) => x.variant !== 'sequential')
  const within = keelRuns.filter((x) => x.ratio <= 1.5).map(name)
  const above = keelRuns.filter((x) => x.ratio > 1.5).map((x) => `${name(x)} (${fmtRatio(x.ratio)})`)
  const verdict =
    `Against the goal (the app's p99 during the run <= 1.5x of the app alone): within it ${within.length > 0 ? within.join(', ') : 'none'}; ` +
    `above it ${above.length > 0 ? above.join(', ') : 'none'}.`
  return `${verdict}

Reading. An earlier version of this benchmark ran the app's clients in the migrator's own Node process, so the
migrator's JavaScript work delayed the app's query callbacks on a shared event loop (app p99 2.87x at
concurrency 4); the app now runs in a process of its own, as in production, and each run is compared with the
same app alone just before it. The last column says what the app's backends waited on: a migration locks only
the tenant it migrates, so heavyweight Lock waits should stay at 0 and LWLock waits near it; what remains is
CPU, more migrating backends competing with the app's for the machine's cores (on this 2-core machine the
app alone keeps them about 90 % busy). What a user can do: keep \`concurrency\` at or below the cores the
database can spare, or set \`pauseBetweenTenantsMs\` so each worker leaves the CPU idle between tenants.
An adaptive pace driven by the app's own latency was not built: the migrator cannot see the app's latency,
and its own round trips measure its own queueing.`
}

runMain(main)
