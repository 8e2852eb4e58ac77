/**
 * Database per tenant (issue #13, ADR 0033), side by side in one run:
 *
 * 1. Point selects spread over TENANTS tenant databases: raw node-postgres with a pg.Pool per database
 *    (the naive pool-per-tenant: up to tenants x pool.max connections), keel in database mode with a
 *    budget that never binds (the per-statement overhead), and keel with maxConnections far below
 *    tenants x pool.max (the cap, paid for in reconnects). Median q/s, ratio to raw, and the peak of
 *    each variant's connections sampled from pg_stat_activity.
 * 2. Tenant B's p99 on its own database, alone and while tenant A floods A's database through the same
 *    keel (same server, same budget): A's statements holding connections (with and without the
 *    per-tenant cap, the counterfactual), and A's statements burning the server's CPU (raw pg beside
 *    keel, and keel with A capped lower through limits.forTenant).
 *
 *   bash scripts/bench.sh database
 *
 * Environment: BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_CONCURRENCY (16), BENCH_POOL_MAX (4),
 * BENCH_TENANTS (16), BENCH_CAP (16; a variant at half of it is run too). A benchmark, not a test: it never fails on timings.
 */
import { createKeel, type Keel } from '@keel/core'
import pg from 'pg'
import { BENCH_APPLICATION_NAME } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, type LoopResult } from './lib/load.js'
import { loadNote, machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack, type Stack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  seconds: envNumber('BENCH_SECONDS', 3),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 16)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 4)),
  tenants: Math.round(envNumber('BENCH_TENANTS', 16)),
  cap: Math.round(envNumber('BENCH_CAP', 16)),
  rows: 200,
}

const SELECT = 'SELECT id, body FROM bench_items WHERE id = $1'
const database = (i: number) => `bench_dt_${i}`

function urlFor(url: string, db: string): string {
  const u = new URL(url)
  u.pathname = `/${db}`
  return u.toString()
}

const pick = (n: number) => Math.floor(Math.random() * n)

interface Variant {
  key: string
  label: string
  application: string
  op(): Promise<unknown>
  close(): Promise<void>
}

function rawVariant(stack: Stack): Variant {
  const application = `${BENCH_APPLICATION_NAME}-dbm-raw`
  const pools = Array.from({ length: settings.tenants }, (_, i) => {
    const pool = new pg.Pool({
      connectionString: urlFor(stack.primary.url, database(i)),
      max: settings.poolMax,
      idleTimeoutMillis: 0,
      application_name: application,
    })
    pool.on('error', () => undefined)
    return pool
  })
  return {
    key: 'raw',
    label: `raw pg.Pool per database (max ${settings.poolMax} each)`,
    application,
    op: () => pools[pick(pools.length)]!.query(SELECT, [1 + pick(settings.rows)]),
    close: async () => {
      await Promise.all(pools.map((p) => p.end()))
    },
  }
}

function keelFor(stack: Stack, maxConnections: number, application: string): Keel {
  return createKeel({
    postgres: { pool: { max: settings.poolMax, idleTimeoutMs: 0 }, applicationName: application },
    tenancy: {
      mode: 'database',
      maxConnections,
      resolve: (id) => ({
        primary: { connectionString: urlFor(stack.primary.url, database(Number(id.slice(1)))) },
      }),
    },
    limits: { tenantConnections: { max: settings.poolMax }, acquireTimeoutMs: 30_000 },
  })
}

function keelVariant(stack: Stack, key: string, label: string, maxConnections: number): Variant {
  const application = `${BENCH_APPLICATION_NAME}-dbm-${key}`
  const keel = keelFor(stack, maxConnections, application)
  return {
    key,
    label,
    application,
    op: () => keel.tenant(`t${pick(settings.tenants)}`).query(SELECT, [1 + pick(settings.rows)]),
    close: () => keel.close(),
  }
}

async function setup(stack: Stack): Promise<void> {
  const su = new pg.Client({ connectionString: stack.primary.superUrl })
  await su.connect()
  try {
    for (let i = 0; i < settings.tenants; i++) {
      const exists = await su.query('SELECT 1 FROM pg_database WHERE datname = $1', [database(i)])
      if (exists.rowCount === 1) continue
      await su.query(`CREATE DATABASE ${database(i)} OWNER keel_owner`)
      const owner = new pg.Client({ connectionString: urlFor(stack.primary.ownerUrl, database(i)) })
      await owner.connect()
      try {
        await owner.query(`REVOKE ALL ON DATABASE ${database(i)} FROM PUBLIC`)
        await owner.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${database(i)} TO keel_app`)
        await owner.query('GRANT USAGE ON SCHEMA public TO keel_app')
        await owner.query('CREATE TABLE bench_items (id int PRIMARY KEY, body text NOT NULL)')
        await owner.query('INSERT INTO bench_items SELECT i, md5(i::text) FROM generate_series(1, $1) i', [
          settings.rows,
        ])
        await owner.query('GRANT SELECT ON bench_items TO keel_app')
        await owner.query('ANALYZE bench_items')
      } finally {
        await owner.end()
      }
    }
  } finally {
    await su.end()
  }
}

/** Samples the variant's connections on the server until stopped; returns the peak. */
function sampler(stack: Stack, application: string): { stop(): Promise<number> } {
  let peak = 0
  let running = true
  const done = (async () => {
    const su = new pg.Client({ connectionString: stack.primary.superUrl })
    await su.connect()
    try {
      while (running) {
        const r = await su.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1',
          [`${application}%`],
        )
        peak = Math.max(peak, r.rows[0]!.n)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    } finally {
      await su.end()
    }
  })()
  return {
    stop: async () => {
      running = false
      await done
      return peak
    },
  }
}

async function throughput(stack: Stack) {
  const list = [
    rawVariant(stack),
    keelVariant(
      stack,
      'keel-roomy',
      `keel database mode, maxConnections ${settings.tenants * settings.poolMax} (never binds)`,
      settings.tenants * settings.poolMax,
    ),
    keelVariant(stack, 'keel-capped', `keel database mode, maxConnections ${settings.cap}`, settings.cap),
    keelVariant(
      stack,
      'keel-tight',
      `keel database mode, maxConnections ${Math.floor(settings.cap / 2)} (fewer than the databases in use)`,
      Math.floor(settings.cap / 2),
    ),
  ]
  const results = new Map<string, LoopResult[]>(list.map((v) => [v.key, []]))
  const peaks = new Map<string, number>(list.map((v) => [v.key, 0]))
  for (const v of list) await closedLoop(v.op, { concurrency: settings.concurrency, seconds: 1 })
  for (let round = 0; round < settings.rounds; round++) {
    const order = round % 2 === 0 ? list : [...list].reverse()
    const line: string[] = []
    for (const v of order) {
      const sampling = sampler(stack, v.application)
      const r = await closedLoop(v.op, { concurrency: settings.concurrency, seconds: settings.seconds })
      peaks.set(v.key, Math.max(peaks.get(v.key)!, await sampling.stop()))
      results.get(v.key)!.push(r)
      line.push(`${v.key} ${fmtInt(r.qps)}${r.errors > 0 ? ` (${r.errors} errors: ${r.firstError})` : ''}`)
    }
    console.log(`round ${round + 1}: ${line.join(', ')}`)
  }
  await Promise.all(list.map((v) => v.close()))
  const raw = median(results.get('raw')!.map((r) => r.qps))
  return list.map((v) => {
    const runs = results.get(v.key)!
    const qps = median(runs.map((r) => r.qps))
    return {
      key: v.key,
      label: v.label,
      qps,
      p50Ms: median(runs.map((r) => r.latency.p50Ms)),
      p99Ms: median(runs.map((r) => r.latency.p99Ms)),
      ratio: qps / raw,
      peakConnections: peaks.get(v.key)!,
      errors: runs.reduce((n, r) => n + r.errors, 0),
    }
  })
}

interface NoisyCase {
  key: string
  label: string
  /** What A's callers run. */
  flood: string
  /** A's per-tenant cap, as the label shows it. */
  aCap: string
  b(): Promise<unknown>
  a(): Promise<unknown>
  close(): Promise<void>
}

const AGGREGATE = 'SELECT count(*) FROM generate_series(1, 20000)'
const HOLD = 'SELECT pg_sleep(0.05)'

interface NoisyKeelOptions {
  poolMax: number
  tenantMax: number
  /** Tenant A's own cap (limits.forTenant), when it differs from everyone's. */
  aMax?: number
}

function noisyKeel(stack: Stack, key: string, o: NoisyKeelOptions): Keel {
  return createKeel({
    postgres: {
      pool: { max: o.poolMax, idleTimeoutMs: 0 },
      applicationName: `${BENCH_APPLICATION_NAME}-dbm-${key}`,
    },
    tenancy: {
      mode: 'database',
      maxConnections: settings.cap,
      resolve: (id) => ({
        primary: { connectionString: urlFor(stack.primary.url, database(Number(id.slice(1)))) },
      }),
    },
    limits: {
      tenantConnections: { max: o.tenantMax },
      acquireTimeoutMs: 30_000,
      ...(o.aMax === undefined
        ? {}
        : { forTenant: (id: string) => (id === 't0' ? { tenantConnections: { max: o.aMax! } } : undefined) }),
    },
  })
}

function keelCase(stack: Stack, key: string, label: string, flood: string, o: NoisyKeelOptions): NoisyCase {
  const keel = noisyKeel(stack, key, o)
  return {
    key,
    label,
    flood,
    aCap: `${o.aMax ?? o.tenantMax} of ${settings.cap}`,
    b: () => keel.tenant('t1').query(SELECT, [1 + pick(settings.rows)]),
    a: () => keel.tenant('t0').query(flood),
    close: () => keel.close(),
  }
}

/** node-postgres with a pool per database: what an app without keel runs, for the server's share. */
function rawCase(stack: Stack, flood: string): NoisyCase {
  const pool = (i: number) => {
    const p = new pg.Pool({
      connectionString: urlFor(stack.primary.url, database(i)),
      max: settings.poolMax,
      idleTimeoutMillis: 0,
      application_name: `${BENCH_APPLICATION_NAME}-dbm-noisy-raw`,
    })
    p.on('error', () => undefined)
    return p
  }
  const a = pool(0)
  const b = pool(1)
  return {
    key: 'raw-cpu',
    label: `raw pg.Pool per database (max ${settings.poolMax} each), A: an aggregate`,
    flood,
    aCap: `${settings.poolMax} (its pool)`,
    b: () => b.query(SELECT, [1 + pick(settings.rows)]),
    a: () => a.query(flood),
    close: async () => {
      await Promise.all([a.end(), b.end()])
    },
  }
}

/**
 * Tenant B (2 callers, point selects on its own database) alone, then while tenant A floods A's
 * database with FLOOD_CALLERS callers, alternating, median p99 of the rounds. Two kinds of flood: A's
 * statements hold connections (a slow report waiting on I/O or locks: what keel's budget and per-tenant
 * caps govern) and A's statements burn the server's CPU (which a connection cap bounds only through how
 * many of A's statements run at once: the raw row shows what the server alone does).
 */
async function noisyNeighbour(stack: Stack) {
  const floodCallers = 2 * settings.cap
  const hold = { poolMax: settings.cap, tenantMax: settings.cap / 2 }
  const cases: NoisyCase[] = [
    keelCase(stack, 'hold-capped', 'keel, A holds connections, per-tenant cap (share 0.5)', HOLD, hold),
    keelCase(stack, 'hold-uncapped', 'keel, A holds connections, no per-tenant cap', HOLD, {
      poolMax: settings.cap,
      tenantMax: settings.cap,
    }),
    rawCase(stack, AGGREGATE),
    keelCase(stack, 'cpu', `keel, A: an aggregate, tenant cap ${settings.poolMax}`, AGGREGATE, {
      poolMax: settings.poolMax,
      tenantMax: settings.poolMax,
    }),
    keelCase(stack, 'cpu-a1', 'keel, A: an aggregate, A capped at 1 (limits.forTenant)', AGGREGATE, {
      poolMax: settings.poolMax,
      tenantMax: settings.poolMax,
      aMax: 1,
    }),
  ]
  for (const c of cases) await closedLoop(c.b, { concurrency: 2, seconds: 1 })
  const tallies = cases.map(() => ({
    alone: [] as number[],
    during: [] as number[],
    aQps: [] as number[],
    bErrors: 0,
  }))
  // Every case in every round, in a rotating order: the shared machine's drifts (its other work, CPU
  // steal) then weigh on every case alike, not on whichever ran during them.
  for (let round = 0; round < settings.rounds; round++) {
    const order = [...cases.keys()]
    for (const i of [...order.slice(round % order.length), ...order.slice(0, round % order.length)]) {
      const c = cases[i]!
      const t = tallies[i]!
      const quiet = await closedLoop(c.b, { concurrency: 2, seconds: settings.seconds })
      t.alone.push(quiet.latency.p99Ms)
      const flooding = closedLoop(c.a, { concurrency: floodCallers, seconds: settings.seconds + 0.5 })
      await new Promise((resolve) => setTimeout(resolve, 250))
      const busy = await closedLoop(c.b, { concurrency: 2, seconds: settings.seconds })
      t.during.push(busy.latency.p99Ms)
      t.bErrors += quiet.errors + busy.errors
      t.aQps.push((await flooding).qps)
    }
  }
  await Promise.all(cases.map((c) => c.close()))
  const out = cases.map((c, i) => {
    const t = tallies[i]!
    const row = {
      key: c.key,
      label: c.label,
      aCap: c.aCap,
      aloneP99Ms: median(t.alone),
      duringP99Ms: median(t.during),
      ratio: median(t.during) / median(t.alone),
      aQps: median(t.aQps),
      bErrors: t.bErrors,
    }
    console.log(
      `${c.key}: B p99 ${fmt(row.aloneP99Ms)} -> ${fmt(row.duringP99Ms)} ms (${fmtRatio(row.ratio)})`,
    )
    return row
  })
  return { floodCallers, cases: out }
}

async function main(): Promise<void> {
  const machine = machineMeta()
  const stack = readStack()
  await setup(stack)
  const rows = await throughput(stack)
  const noisy = await noisyNeighbour(stack)
  const naive = settings.tenants * settings.poolMax
  const table = markdownTable(
    ['variant', 'median q/s', 'p50 ms', 'p99 ms', 'vs raw', 'peak connections', 'errors'],
    rows.map((r) => [
      r.label,
      fmtInt(r.qps),
      fmt(r.p50Ms),
      fmt(r.p99Ms),
      fmtRatio(r.ratio),
      String(r.peakConnections),
      String(r.errors),
    ]),
    [false, true, true, true, true, true, true],
  )
  const noisyTable = markdownTable(
    ['B beside A', "A's cap", 'B p99 alone ms', 'B p99 during ms', 'ratio', 'A calls/s', 'B errors'],
    noisy.cases.map((c) => [
      c.label,
      c.aCap,
      fmt(c.aloneP99Ms),
      fmt(c.duringP99Ms),
      fmtRatio(c.ratio),
      fmtInt(c.aQps),
      String(c.bErrors),
    ]),
    [false, true, true, true, true, true, true],
  )
  const noisyVerdict = noisy.cases
    .map((c) => `${c.key}: ${fmtRatio(c.ratio)} ${c.ratio <= 1.5 ? 'meets' : 'misses'} the goal (<= 1.5x)`)
    .join('; ')
  const load = (await import('node:os'))
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')
  const markdown = `Point selects by primary key over ${settings.tenants} tenant databases on one server, ${settings.concurrency} concurrent callers, each call for a random tenant; median of ${settings.rounds} alternating rounds of ${settings.seconds} s. The naive pool per database may open up to ${settings.tenants} x ${settings.poolMax} = ${naive} connections.

${table}

Tenant B (2 callers, point selects on its own database) alone and while tenant A floods A's database on the same server (${noisy.floodCallers} callers) through the same keel, \`maxConnections: ${settings.cap}\`; median p99 of ${settings.rounds} rounds, each running every case (B alone for ${settings.seconds} s, then beside A's flood) in a rotating order. A "holds connections": \`${HOLD}\` (a slow report waiting on I/O or locks); A "an aggregate": \`${AGGREGATE}\` (CPU on the server).

${noisyTable}

${noisyVerdict}

Run: ${loadNote(machine)}. Load average ${machine.loadAverage.join(' ')} at the start, ${load} at the end, on ${machine.cores} cores (${machine.cpuModel}), ${machine.node}: Postgres, the load generator and keel share them.
`
  console.log(markdown)
  writeResults(
    'issue-13-database-mode',
    'Database per tenant (issue #13)',
    { machine, settings, rows, noisy },
    markdown,
  )
}

runMain(main)
