/**
 * Fleet migration benchmark (issue #14): wall time to migrate N tenant schemas x 3 migrations (a table with
 * rows, an ADD COLUMN, a CREATE INDEX CONCURRENTLY) with @keel/migrate at concurrency 1, 2 and 4, against
 * a sequential one-connection runner (search_path + BEGIN/COMMIT per file, a ledger row, no lock_timeout:
 * what a bash loop over --schema does). Meanwhile app clients read a per-tenant table of a random tenant:
 * their p99 during each fleet run vs without one. Writes bench/results/issue-14-migrate.{json,md}.
 *
 *   node bench/dist/migrate.js
 *
 * Environment: BENCH_MIGRATE_SCHEMAS (300), BENCH_MIGRATE_APP_CLIENTS (4), BENCH_MIGRATE_BASELINE_SECONDS (5),
 * BENCH_MIGRATE_VARIANTS (comma list of sequential,keel-1,keel-2,keel-4). A benchmark: it never fails on timings.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMigrator } from '@keel/migrate'
import pg from 'pg'
import { envNumber } from './lib/env.js'
import { machineMeta } from './lib/machine.js'
import { fmt, fmtRatio, markdownTable } from './lib/report.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { type LatencySummary, Samples, summarize } from './lib/stats.js'

const settings = {
  schemas: Math.round(envNumber('BENCH_MIGRATE_SCHEMAS', 300)),
  appClients: Math.round(envNumber('BENCH_MIGRATE_APP_CLIENTS', 4)),
  baselineSeconds: envNumber('BENCH_MIGRATE_BASELINE_SECONDS', 5),
  rowsPerTenant: 500,
}
const ALL = ['sequential', 'keel-1', 'keel-2', 'keel-4'] as const
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
  wallS: number
  tenantsPerS: number
  failed: number
  app: LatencySummary
}

interface Results {
  meta: ReturnType<typeof machineMeta> & { loadAverageEnd?: number[] }
  settings: typeof settings
  baseline: LatencySummary | undefined
  rows: Row[]
  totalS?: number
}

async function withClient<T>(url: string, body: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return await body(c)
  } finally {
    await c.end()
  }
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

/** App clients (the runtime role) reading a random tenant's accounts until stopped. */
function appLoad(appUrl: string): { stop: () => Promise<LatencySummary> } {
  const samples = new Samples()
  let running = true
  const worker = async () => {
    const c = new pg.Client({ connectionString: appUrl })
    await c.connect()
    try {
      while (running) {
        const id = ids[Math.floor(Math.random() * ids.length)]!
        const t0 = performance.now()
        await c.query(`SELECT name FROM "${schemaOf(id)}".accounts WHERE id = $1`, [
          1 + Math.floor(Math.random() * 50),
        ])
        samples.push(performance.now() - t0)
      }
    } finally {
      await c.end()
    }
  }
  const workers = Array.from({ length: settings.appClients }, worker)
  return {
    stop: async () => {
      running = false
      await Promise.all(workers)
      return summarize(samples.values())
    },
  }
}

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

  console.log(`fleet migration: ${settings.schemas} schemas x ${MIGRATIONS.length} migrations`)
  await resetFleet(stack.primary.ownerUrl)
  const base = appLoad(stack.primary.url)
  await new Promise((r) => setTimeout(r, settings.baselineSeconds * 1_000))
  results.baseline = await base.stop()
  console.log(`app p99 without a migration: ${fmt(results.baseline.p99Ms)} ms`)

  for (const variant of variants) {
    await resetFleet(stack.primary.ownerUrl)
    const load = appLoad(stack.primary.url)
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
        lint: 'off',
      })
      const r = await migrator.up()
      failed = r.failed.length
      await migrator.close()
    }
    const wallS = (performance.now() - t0) / 1_000
    const app = await load.stop()
    results.rows.push({ variant, wallS, tenantsPerS: settings.schemas / wallS, failed, app })
    console.log(
      `${variant}: ${fmt(wallS)} s (${fmt(settings.schemas / wallS, 1)} tenants/s), ${failed} failed, app p99 ${fmt(app.p99Ms)} ms`,
    )
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
    (r) => {
      const seq = r.rows.find((x) => x.variant === 'sequential')
      return r.rows
        .filter((x) => x.variant !== 'sequential')
        .map(
          (x) =>
            `${x.variant}: ${fmt(x.wallS)} s${seq ? ` (${fmtRatio(seq.wallS / x.wallS)} the sequential runner's speed)` : ''}; app p99 ${fmtRatio(x.app.p99Ms / (r.baseline?.p99Ms ?? Number.NaN))} of baseline`,
        )
    },
    (r) => render(r),
    false,
  )
}

function render(r: Results): string {
  const seq = r.rows.find((x) => x.variant === 'sequential')
  const table = markdownTable(
    [
      'runner',
      'wall time (s)',
      'tenants/s',
      'vs sequential',
      'failed',
      'app p50 (ms)',
      'app p99 (ms)',
      'app p99 vs no migration',
    ],
    r.rows.map((x) => [
      x.variant === 'sequential'
        ? 'sequential, one connection'
        : `keel, concurrency ${x.variant.split('-')[1]}`,
      fmt(x.wallS),
      fmt(x.tenantsPerS, 1),
      seq ? fmtRatio(seq.wallS / x.wallS) : 'n/a',
      String(x.failed),
      fmt(x.app.p50Ms),
      fmt(x.app.p99Ms),
      fmtRatio(x.app.p99Ms / (r.baseline?.p99Ms ?? Number.NaN)),
    ]),
    [false, true, true, true, true, true, true, true],
  )
  return `${r.settings.schemas} tenant schemas x 3 migrations (CREATE TABLE + ${r.settings.rowsPerTenant} rows, ADD COLUMN, CREATE INDEX CONCURRENTLY), on the local stack's primary. ${r.settings.appClients} app clients (the runtime role) read a random tenant's table throughout; their p99 without any migration: ${fmt(r.baseline?.p99Ms)} ms (p50 ${fmt(r.baseline?.p50Ms)} ms).

${table}

keel runs each tenant with its advisory lock, a ledger row per migration in the migration's transaction,
lock_timeout/statement_timeout per transaction, a stepwise run for the concurrent index and an INVALID-index
scan per tenant; the sequential runner does none of that (and has no lock_timeout).

Reading: on this machine (2 shared cores, load average ~10, Postgres on the same cores) the cost per tenant
is round trips and commits, not SQL: keel's bookkeeping (the scope lock, one ledger read, a ledger row in each
migration's transaction, progress rows around the concurrent build, the INVALID-index scan) is about twice the
round trips of the bare loop, so at concurrency 1 it takes about twice as long, and concurrency 2 wins that
back. Concurrency 4 does not go faster here because the two cores are already saturated, and it is where the
app's p99 exceeds the 1.5x goal; on a server with cores to spare, concurrency is the lever, and 2 is the
setting that kept the app within ~1.3x here.

Machine: ${r.meta.cpuModel}, ${r.meta.cores} cores shared with other work (load average at start ${r.meta.loadAverage.join(', ')}, end ${r.meta.loadAverageEnd?.join(', ') ?? 'n/a'}), Node ${r.meta.node}, ${r.meta.date}.
`
}

runMain(main)
