/**
 * Issue #12: point selects through Drizzle and Kysely on keel, against the same ORM on a raw pg.Pool and
 * against the RLS recipe their docs give (a transaction per statement: BEGIN, set_config, the select,
 * COMMIT), all in one run, alternating rounds. Writes bench/results/issue-12-orms.{json,md}.
 *
 *   node bench/dist/orms.js          (bash scripts/bench.sh orms)
 *
 * - raw: the ORM on a superuser pg.Pool, `WHERE tenant_id = $1 AND id = $2` (no RLS: the baseline);
 * - keel: one ORM instance per process on keel.pgPool(), each call a request in keel.run(keel.tenant(t)),
 *   `WHERE id = $1` (RLS supplies the tenant): one round trip per statement;
 * - RLS recipe: the ORM on a pg.Pool as the runtime role, each call `transaction(tx => { set_config(
 *   'app.tenant_id', t, true); select })`: four round trips.
 *
 * Environment: BENCH_SECONDS (3), BENCH_ROUNDS (5), BENCH_WARMUP_SECONDS (1.5), BENCH_CONCURRENCY (32),
 * BENCH_POOL_MAX (10), BENCH_ORM_TENANTS (100), BENCH_ORM_ROWS (200), BENCH_RESULTS_DIR. A benchmark,
 * not a test: it never fails on timings.
 */

import { applyRlsPolicy, createKeel, type Keel } from '@keel/core'
import { and, sql as dsql, eq } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core'
import { Kysely, sql as ksql, PostgresDialect } from 'kysely'
import pg from 'pg'
import { BENCH_APPLICATION_NAME } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, sleep } from './lib/load.js'
import { machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  seconds: envNumber('BENCH_SECONDS', 3),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 5)),
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 1.5),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 32)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 10)),
  tenants: Math.round(envNumber('BENCH_ORM_TENANTS', 100)),
  rowsPerTenant: Math.round(envNumber('BENCH_ORM_ROWS', 200)),
}

const TABLE = 'bench_orm_items'

const items = pgTable(
  TABLE,
  { tenantId: text('tenant_id').notNull(), id: integer('id').notNull(), payload: text('payload').notNull() },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] })],
)

interface Tables {
  bench_orm_items: { tenant_id: string; id: number; payload: string }
}

async function setup(): Promise<void> {
  const stack = readStack()
  const owner = new pg.Client({ connectionString: stack.primary.ownerUrl })
  const superuser = new pg.Client({ connectionString: stack.primary.superUrl })
  await owner.connect()
  await superuser.connect()
  try {
    await owner.query(
      `CREATE TABLE IF NOT EXISTS ${TABLE} (tenant_id text NOT NULL, id int NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id))`,
    )
    const expected = settings.tenants * settings.rowsPerTenant
    const { rows } = await superuser.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
    if (rows[0]?.n !== expected) {
      await owner.query(`TRUNCATE ${TABLE}`)
      await superuser.query(
        `INSERT INTO ${TABLE} (tenant_id, id, payload)
         SELECT 't' || lpad(t::text, 3, '0'), i, md5(t::text || ':' || i::text)
         FROM generate_series(0, $1::int - 1) AS t, generate_series(1, $2::int) AS i`,
        [settings.tenants, settings.rowsPerTenant],
      )
    }
    await applyRlsPolicy(owner, { table: TABLE })
    await owner.query(`ANALYZE ${TABLE}`)
  } finally {
    await owner.end()
    await superuser.end()
  }
}

const tenantOf = (n: number) => `t${String(n).padStart(3, '0')}`
function pick(): { tenant: string; id: number } {
  return {
    tenant: tenantOf(Math.floor(Math.random() * settings.tenants)),
    id: 1 + Math.floor(Math.random() * settings.rowsPerTenant),
  }
}

function expectOne(rows: unknown[]): void {
  if (rows.length !== 1) throw new Error(`expected 1 row, got ${rows.length}`)
}

type Op = () => Promise<void>
interface Variant {
  orm: 'Drizzle' | 'Kysely'
  key: 'raw' | 'keel' | 'recipe'
  label: string
  roundTrips: string
  op: Op
}

function pool(url: string, name: string): pg.Pool {
  return new pg.Pool({
    connectionString: url,
    max: settings.poolMax,
    application_name: `${BENCH_APPLICATION_NAME}-${name}`,
  })
}

function variants(keel: Keel, raw: pg.Pool, app: pg.Pool): Variant[] {
  // One ORM instance each, as an app has: on the raw pools, and on keel.pgPool() (follows keel.current()).
  const dRaw = drizzle({ client: raw })
  const dApp = drizzle({ client: app })
  const dKeel = drizzle({ client: keel.pgPool() })
  const kRaw = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: raw }) })
  const kApp = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: app }) })
  const kKeel = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: keel.pgPool() }) })
  return [
    {
      orm: 'Drizzle',
      key: 'raw',
      label: 'Drizzle on a raw pg.Pool (superuser, WHERE tenant_id AND id)',
      roundTrips: '1',
      op: async () => {
        const { tenant, id } = pick()
        expectOne(
          await dRaw
            .select()
            .from(items)
            .where(and(eq(items.tenantId, tenant), eq(items.id, id))),
        )
      },
    },
    {
      orm: 'Drizzle',
      key: 'keel',
      label: 'Drizzle on keel.pgPool() (RLS, WHERE id, keel.run per call)',
      roundTrips: '1',
      op: async () => {
        const { tenant, id } = pick()
        expectOne(
          await keel.run(
            keel.tenant(tenant),
            async () => await dKeel.select().from(items).where(eq(items.id, id)),
          ),
        )
      },
    },
    {
      orm: 'Drizzle',
      key: 'recipe',
      label: "Drizzle's RLS recipe: transaction + set_config per statement",
      roundTrips: '4',
      op: async () => {
        const { tenant, id } = pick()
        const rows = await dApp.transaction(async (tx) => {
          await tx.execute(dsql`select set_config('app.tenant_id', ${tenant}, true)`)
          return tx.select().from(items).where(eq(items.id, id))
        })
        expectOne(rows)
      },
    },
    {
      orm: 'Kysely',
      key: 'raw',
      label: 'Kysely on a raw pg.Pool (superuser, WHERE tenant_id AND id)',
      roundTrips: '1',
      op: async () => {
        const { tenant, id } = pick()
        expectOne(
          await kRaw
            .selectFrom(TABLE)
            .selectAll()
            .where('tenant_id', '=', tenant)
            .where('id', '=', id)
            .execute(),
        )
      },
    },
    {
      orm: 'Kysely',
      key: 'keel',
      label: 'Kysely on keel.pgPool() (RLS, WHERE id, keel.run per call)',
      roundTrips: '1',
      op: async () => {
        const { tenant, id } = pick()
        expectOne(
          await keel.run(keel.tenant(tenant), () =>
            kKeel.selectFrom(TABLE).selectAll().where('id', '=', id).execute(),
          ),
        )
      },
    },
    {
      orm: 'Kysely',
      key: 'recipe',
      label: 'Kysely RLS recipe: transaction + set_config per statement',
      roundTrips: '4',
      op: async () => {
        const { tenant, id } = pick()
        const rows = await kApp.transaction().execute(async (trx) => {
          await ksql`select set_config('app.tenant_id', ${tenant}, true)`.execute(trx)
          return trx.selectFrom(TABLE).selectAll().where('id', '=', id).execute()
        })
        expectOne(rows)
      },
    },
  ]
}

interface Row {
  orm: string
  key: string
  label: string
  roundTrips: string
  qps: number
  qpsRounds: number[]
  meanMs: number
  p99Ms: number
  errors: number
}

async function main(): Promise<void> {
  const meta = machineMeta()
  const started = performance.now()
  await setup()
  const stack = readStack()
  const raw = pool(stack.primary.superUrl, 'orm-raw')
  const app = pool(stack.primary.url, 'orm-recipe')
  const keel = createKeel({
    postgres: {
      primary: { connectionString: stack.primary.url },
      pool: { max: settings.poolMax },
      applicationName: `${BENCH_APPLICATION_NAME}-orm-keel`,
    },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
  })
  const all = variants(keel, raw, app)
  const samples = new Map<Variant, { qps: number[]; mean: number[]; p99: number[]; errors: number }>()
  try {
    for (const v of all) {
      const warm = await closedLoop(v.op, {
        concurrency: settings.concurrency,
        seconds: settings.warmupSeconds,
      })
      if (warm.errors > 0) throw new Error(`${v.label}: ${warm.firstError}`)
      samples.set(v, { qps: [], mean: [], p99: [], errors: 0 })
    }
    for (let round = 0; round < settings.rounds; round++) {
      // The order reverses every round, so drift in the machine's load weighs on every variant alike.
      const order = round % 2 === 0 ? all : [...all].reverse()
      for (const v of order) {
        const r = await closedLoop(v.op, { concurrency: settings.concurrency, seconds: settings.seconds })
        const s = samples.get(v)!
        s.qps.push(r.qps)
        s.mean.push(r.latency.meanMs)
        s.p99.push(r.latency.p99Ms)
        s.errors += r.errors
        if (r.errors > 0) console.error(`${v.label}: ${r.errors} errors, first: ${r.firstError}`)
        await sleep(100)
      }
      console.log(`round ${round + 1}/${settings.rounds} done`)
    }
  } finally {
    await keel.close()
    await raw.end()
    await app.end()
  }

  const rows: Row[] = all.map((v) => {
    const s = samples.get(v)!
    return {
      orm: v.orm,
      key: v.key,
      label: v.label,
      roundTrips: v.roundTrips,
      qps: median(s.qps),
      qpsRounds: s.qps,
      meanMs: median(s.mean),
      p99Ms: median(s.p99),
      errors: s.errors,
    }
  })
  const baseline = (orm: string) => rows.find((r) => r.orm === orm && r.key === 'raw')!
  const ratioRange = (r: Row) => {
    const b = baseline(r.orm)
    const per = r.qpsRounds.map((q, i) => q / b.qpsRounds[i]!)
    return `${fmtRatio(r.qps / b.qps)} (${fmt(Math.min(...per))}–${fmt(Math.max(...per))})`
  }
  const summary = (['Drizzle', 'Kysely'] as const).map((orm) => {
    const pick = (key: string) => rows.find((r) => r.orm === orm && r.key === key)!
    const k = pick('keel')
    return {
      orm,
      keelVsRaw: k.qps / pick('raw').qps,
      keelVsRecipe: k.qps / pick('recipe').qps,
      recipeVsRaw: pick('recipe').qps / pick('raw').qps,
    }
  })
  const md = [
    `Measured ${meta.date.slice(0, 16).replace('T', ' ')} UTC on ${meta.cores} cores (${meta.cpuModel}), Node ${meta.node}, load average ${meta.loadAverage.join(' ')}. ` +
      `${settings.tenants} tenants x ${settings.rowsPerTenant} rows, a uniformly random tenant and id per call, ${settings.concurrency} concurrent callers, pool max ${settings.poolMax} per variant; ` +
      `${settings.rounds} alternating rounds of ${settings.seconds} s after a ${settings.warmupSeconds} s warm-up each; median q/s, the ratio of medians to the same ORM on raw pg (range of the per-round ratios).`,
    '',
    markdownTable(
      ['variant', 'round trips', 'q/s (median)', 'vs same ORM raw (range)', 'mean ms', 'p99 ms', 'errors'],
      rows.map((r) => [
        r.label,
        r.roundTrips,
        fmtInt(r.qps),
        r.key === 'raw' ? '1.00x' : ratioRange(r),
        fmt(r.meanMs),
        fmt(r.p99Ms),
        fmtInt(r.errors),
      ]),
      [false, true, true, true, true, true, true],
    ),
    '',
    ...summary.map(
      (s) =>
        `- ${s.orm}: keel vs raw **${fmtRatio(s.keelVsRaw)}** (goal ≥ 0.90x: ${s.keelVsRaw >= 0.9 ? 'met' : 'not met'}), keel vs the RLS recipe **${fmtRatio(s.keelVsRecipe)}**; the recipe is ${fmtRatio(s.recipeVsRaw)} raw.`,
    ),
    '',
  ].join('\n')
  console.log(`\n${md}`)
  const written = writeResults(
    'issue-12-orms',
    'ORMs on keel (issue #12): Drizzle and Kysely point selects',
    { meta, settings, rows, summary, totalS: (performance.now() - started) / 1_000 },
    md,
  )
  console.log(`wrote ${written.join(', ')}`)
}

runMain(main)
