/**
 * keel tenancy benchmark: what one-round-trip RLS scoping costs against raw node-postgres, on
 * loopback and through a delay proxy, and how the per-tenant connection cap protects a quiet tenant
 * from a noisy one. Prints tables; writes bench/results/tenancy.{json,md} and the README's results.
 *
 *   node bench/dist/tenancy.js [all|throughput|proxy|noisy|breakdown]
 *
 * `all` (the default) runs throughput, proxy and noisy; `breakdown` isolates where keel's loopback
 * cost goes and runs only on request.
 *
 * Environment: BENCH_SECONDS (3), BENCH_ROUNDS (5), BENCH_PROXY_ROUNDS (3), BENCH_WARMUP_SECONDS
 * (1.5), BENCH_PROXY_DELAY_MS (2), BENCH_SERIAL_SECONDS (2), BENCH_NOISY_SECONDS (5),
 * BENCH_CONCURRENCY (32), BENCH_POOL_MAX (10), BENCH_VARIANTS (comma list narrowing a comparison),
 * KEEL_STACK_FILE (.keel/stack.json), BENCH_RESULTS_DIR (bench/results; the README is refreshed only
 * for the default). A benchmark, not a test: it never fails on timings.
 */
import { setMaxListeners } from 'node:events'
import { createRequire } from 'node:module'
import { applyRlsPolicy, createKeel, isKeelError, type Keel, type KeelConfig } from '@keel/core'
import pg from 'pg'
import { BENCH_APPLICATION_NAME, CpuMeter } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, type LoopResult, sleep } from './lib/load.js'
import { type MachineMeta, machineMeta } from './lib/machine.js'
import { startDelayProxy } from './lib/proxy.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { previousResults, writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack, type Stack, withHostPort } from './lib/stack.js'
import { median } from './lib/stats.js'

// ---------------------------------------------------------------------------------------------- settings

const settings = {
  seconds: envNumber('BENCH_SECONDS', 3),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 5)),
  proxyRounds: Math.round(envNumber('BENCH_PROXY_ROUNDS', 3)),
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 1.5),
  proxyDelayMs: envNumber('BENCH_PROXY_DELAY_MS', 2),
  serialSeconds: envNumber('BENCH_SERIAL_SECONDS', 2),
  noisySeconds: envNumber('BENCH_NOISY_SECONDS', 5),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 32)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 10)),
  tenants: 100,
  rowsPerTenant: 1000,
  noisy: { floodCallers: 40, floodSql: 'SELECT pg_sleep(0.5)', quietCallers: 4 },
}

const SCENARIOS = ['throughput', 'proxy', 'noisy', 'breakdown'] as const
type Scenario = (typeof SCENARIOS)[number]
/** What `all` runs: the issue's scenarios. `breakdown` (where keel's loopback cost goes) runs on request. */
const DEFAULT_SCENARIOS: readonly Scenario[] = ['throughput', 'proxy', 'noisy']

function parseScenarios(arg: string | undefined): Scenario[] {
  if (arg === undefined || arg === 'all') return [...DEFAULT_SCENARIOS]
  if (arg === 'loopback') return ['throughput']
  if ((SCENARIOS as readonly string[]).includes(arg)) return [arg as Scenario]
  console.error(
    `usage: node bench/dist/tenancy.js [all|${SCENARIOS.join('|')}]  (got ${JSON.stringify(arg)})`,
  )
  process.exit(2)
}

// ------------------------------------------------------------------------------------------------- data

const TABLE = 'bench_items'
const RAW_SQL = `SELECT tenant_id, id, payload FROM ${TABLE} WHERE tenant_id = $1 AND id = $2`
const RLS_SQL = `SELECT tenant_id, id, payload FROM ${TABLE} WHERE id = $1`
const SET_SESSION = "SELECT set_config('app.tenant_id', $1, false)"
const SET_LOCAL = "SELECT set_config('app.tenant_id', $1, true)"

const tenantIds = Array.from({ length: settings.tenants }, (_, i) => `t${String(i).padStart(3, '0')}`)
const pickTenant = (): string => tenantIds[Math.floor(Math.random() * tenantIds.length)]!
const pickId = (): number => 1 + Math.floor(Math.random() * settings.rowsPerTenant)

function expectOneRow(result: { rows: unknown[] }): void {
  if (result.rows.length !== 1) throw new Error(`expected 1 row, got ${result.rows.length}`)
}

/** Table, rows, RLS policy, statistics. Re-seeds only when the row count is not the expected one. */
async function setup(stack: Stack): Promise<{ seeded: boolean; setupS: number }> {
  const started = performance.now()
  const owner = new pg.Client({ connectionString: stack.primary.ownerUrl })
  const superuser = new pg.Client({ connectionString: stack.primary.superUrl })
  await owner.connect()
  await superuser.connect()
  try {
    await owner.query(
      `CREATE TABLE IF NOT EXISTS ${TABLE} (tenant_id text NOT NULL, id int NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id))`,
    )
    await owner.query(`GRANT SELECT ON ${TABLE} TO keel_app`)
    const expected = settings.tenants * settings.rowsPerTenant
    // Counted as the superuser: with FORCE ROW LEVEL SECURITY the owner sees no rows without a tenant.
    const { rows } = await superuser.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
    const seeded = rows[0]?.n !== expected
    if (seeded) {
      await owner.query(`TRUNCATE ${TABLE}`)
      await superuser.query(
        `INSERT INTO ${TABLE} (tenant_id, id, payload)
         SELECT 't' || lpad(t::text, 3, '0'), i, md5(t::text || ':' || i::text)
         FROM generate_series(0, $1::int - 1) AS t, generate_series(1, $2::int) AS i`,
        [settings.tenants, settings.rowsPerTenant],
      )
    }
    await applyRlsPolicy(owner, { table: TABLE })
    if (seeded) await owner.query(`VACUUM ANALYZE ${TABLE}`)
    else await owner.query(`ANALYZE ${TABLE}`)
    return { seeded, setupS: (performance.now() - started) / 1_000 }
  } finally {
    await owner.end()
    await superuser.end()
  }
}

/** Fails loudly if the setup would make the numbers meaningless (RLS off, wrong role, no rows). */
async function sanityCheck(stack: Stack): Promise<void> {
  const keel = createKeel({
    postgres: { primary: { connectionString: stack.primary.url }, pool: { max: 2 } },
  })
  const app = new pg.Client({ connectionString: stack.primary.url })
  await app.connect()
  try {
    const own = await keel.tenant('t001').query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
    if (own.rows[0]?.n !== settings.rowsPerTenant) throw new Error(`keel saw ${own.rows[0]?.n} rows for t001`)
    const foreign = await keel.tenant('t001').query(RAW_SQL, ['t002', 1])
    if (foreign.rows.length !== 0) throw new Error('RLS let tenant t001 read a row of t002')
    const unscoped = await app.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
    if (unscoped.rows[0]?.n !== 0)
      throw new Error('the runtime role sees rows without a tenant: RLS is not on')
  } finally {
    await app.end()
    await keel.close()
  }
}

// --------------------------------------------------------------------------------------------- variants

type VariantKey =
  | 'raw'
  | 'keel'
  | 'keel-where'
  | 'set-config'
  | 'pipeline'
  | 'txn'
  | 'raw-prepared'
  // Breakdown rows: each removes one ingredient of keel's cost.
  | 'raw-app-fixed'
  | 'raw-app-fixed-prepared'
  | 'keel-bypass'
  | 'keel-no-timeout'
  | 'keel-no-cache'

interface Variant {
  key: VariantKey
  label: string
  roundTrips: string
  op(): Promise<unknown>
  close(): Promise<void>
}

interface Endpoint {
  superUrl: string
  appUrl: string
}

function rawPool(connectionString: string, extra: pg.PoolConfig = {}): pg.Pool {
  // idleTimeoutMillis 0: connections stay open between rounds, so no round pays for reconnecting.
  const pool = new pg.Pool({
    connectionString,
    max: settings.poolMax,
    idleTimeoutMillis: 0,
    application_name: `${BENCH_APPLICATION_NAME}-pg`,
    ...extra,
  })
  pool.on('error', () => undefined)
  return pool
}

function keelFor(
  connectionString: string,
  limits: KeelConfig['limits'] = {},
  allowBypassRole = false,
  statementCacheSize?: number,
): Keel {
  return createKeel({
    postgres: {
      primary: { connectionString },
      ...(statementCacheSize === undefined ? {} : { statementCacheSize }),
      pool: { max: settings.poolMax, idleTimeoutMs: 0 },
      applicationName: `${BENCH_APPLICATION_NAME}-keel`,
    },
    tenancy: { mode: 'rls', allowBypassRole },
    limits,
  })
}

function keelVariant(key: VariantKey, label: string, keel: Keel, sameWhere: boolean): Variant {
  return {
    key,
    label,
    roundTrips: '1',
    op: sameWhere
      ? async () => {
          const tenant = pickTenant()
          expectOneRow(await keel.tenant(tenant).query(RAW_SQL, [tenant, pickId()]))
        }
      : async () => expectOneRow(await keel.tenant(pickTenant()).query(RLS_SQL, [pickId()])),
    close: () => keel.close(),
  }
}

function makeVariant(key: VariantKey, endpoint: Endpoint): Variant {
  switch (key) {
    case 'raw': {
      const pool = rawPool(endpoint.superUrl)
      return {
        key,
        label: 'raw pg.Pool (superuser, WHERE tenant_id AND id)',
        roundTrips: '1',
        op: async () => expectOneRow(await pool.query(RAW_SQL, [pickTenant(), pickId()])),
        close: () => pool.end(),
      }
    }
    case 'keel':
      return keelVariant(key, 'keel (RLS, WHERE id)', keelFor(endpoint.appUrl), false)
    case 'keel-where':
      return keelVariant(key, 'keel (RLS, WHERE tenant_id AND id)', keelFor(endpoint.appUrl), true)
    case 'keel-no-timeout':
      return keelVariant(
        key,
        'keel, statementTimeoutMs 0: one set_config (RLS, WHERE id)',
        keelFor(endpoint.appUrl, { statementTimeoutMs: 0 }),
        false,
      )
    case 'keel-no-cache':
      return keelVariant(
        key,
        'keel, statementCacheSize 0: unnamed statements (RLS, WHERE id)',
        keelFor(endpoint.appUrl, {}, false, 0),
        false,
      )
    case 'keel-bypass':
      return keelVariant(
        key,
        'keel as superuser: scope sent, RLS not applied (WHERE tenant_id AND id)',
        keelFor(endpoint.superUrl, {}, true),
        true,
      )
    case 'raw-prepared': {
      const pool = rawPool(endpoint.superUrl)
      return {
        key,
        label: 'raw pg.Pool, named prepared statement (superuser)',
        roundTrips: '1',
        op: async () =>
          expectOneRow(
            await pool.query({ name: 'bench_point', text: RAW_SQL, values: [pickTenant(), pickId()] }),
          ),
        close: () => pool.end(),
      }
    }
    case 'raw-app-fixed':
    case 'raw-app-fixed-prepared': {
      // The tenant is set once per connection at startup: RLS applies, but no scoping statement is sent.
      const pool = rawPool(endpoint.appUrl, { options: '-c app.tenant_id=t001' })
      const prepared = key === 'raw-app-fixed-prepared'
      return {
        key,
        label: `raw pg.Pool, runtime role, tenant fixed per connection${prepared ? ', prepared' : ''} (RLS, WHERE id)`,
        roundTrips: '1',
        op: prepared
          ? async () =>
              expectOneRow(await pool.query({ name: 'bench_rls', text: RLS_SQL, values: [pickId()] }))
          : async () => expectOneRow(await pool.query(RLS_SQL, [pickId()])),
        close: () => pool.end(),
      }
    }
    case 'set-config': {
      const pool = rawPool(endpoint.appUrl)
      return {
        key,
        label: 'pg: set_config, then the query (RLS)',
        roundTrips: '2',
        op: async () => {
          const client = await pool.connect()
          let failure: Error | undefined
          try {
            // Session-level (false): a transaction-local value would be gone before the next statement.
            await client.query(SET_SESSION, [pickTenant()])
            expectOneRow(await client.query(RLS_SQL, [pickId()]))
          } catch (error) {
            failure = error as Error
            throw error
          } finally {
            client.release(failure)
          }
        },
        close: () => pool.end(),
      }
    }
    case 'pipeline': {
      const pool = rawPool(endpoint.appUrl, { pipeline: true })
      return {
        key,
        label: 'pg pipeline: set_config + the query back to back (RLS)',
        roundTrips: '1 (2 Syncs)',
        op: async () => {
          const client = await pool.connect()
          let failure: Error | undefined
          try {
            const [, result] = await Promise.all([
              client.query(SET_SESSION, [pickTenant()]),
              client.query(RLS_SQL, [pickId()]),
            ])
            expectOneRow(result)
          } catch (error) {
            failure = error as Error
            throw error
          } finally {
            client.release(failure)
          }
        },
        close: () => pool.end(),
      }
    }
    case 'txn': {
      const pool = rawPool(endpoint.appUrl)
      return {
        key,
        label: 'pg: BEGIN / set_config(local) / query / COMMIT (RLS)',
        roundTrips: '4',
        op: async () => {
          const client = await pool.connect()
          let failure: Error | undefined
          try {
            await client.query('BEGIN')
            await client.query(SET_LOCAL, [pickTenant()])
            expectOneRow(await client.query(RLS_SQL, [pickId()]))
            await client.query('COMMIT')
          } catch (error) {
            failure = error as Error
            throw error
          } finally {
            client.release(failure)
          }
        },
        close: () => pool.end(),
      }
    }
  }
}

// ------------------------------------------------------------------------------------------- throughput

interface RoundRecord {
  qps: number
  ops: number
  errors: number
  elapsedS: number
  meanMs: number
  p50Ms: number
  p99Ms: number
  clientCpuS: number | undefined
  serverCpuS: number | undefined
  otherCpuS: number | undefined
}

interface VariantRecord {
  key: VariantKey
  label: string
  roundTrips: string
  rounds: RoundRecord[]
  medianQps: number
  /** median(variant q/s) / median(raw q/s). */
  ratioToRaw: number
  /** The same ratio taken round by round (each round runs raw and the variant back to back). */
  pairedRatio: { median: number; min: number; max: number }
  meanMs: number
  p50Ms: number
  p99Ms: number
  clientCpuUsPerQuery: number | undefined
  serverCpuUsPerQuery: number | undefined
  errors: number
  firstError: string | undefined
  serial?: { meanMs: number; p50Ms: number; p99Ms: number; ops: number; ratioToRaw: number }
}

interface ComparisonRecord {
  date: string
  endpoint: string
  concurrency: number
  poolMax: number
  seconds: number
  rounds: number
  warmupSeconds: number
  variants: VariantRecord[]
  /** Median CPU seconds per second used by processes other than the bench and Postgres (interference). */
  otherCpuCores: number | undefined
  delayMsEachWay?: number
}

function toRound(result: LoopResult): RoundRecord {
  const cpu = result.cpu
  const other =
    cpu?.machineBusyS !== undefined && cpu.serverS !== undefined
      ? cpu.machineBusyS - cpu.clientS - cpu.serverS
      : undefined
  return {
    qps: result.qps,
    ops: result.ops,
    errors: result.errors,
    elapsedS: result.elapsedS,
    meanMs: result.latency.meanMs,
    p50Ms: result.latency.p50Ms,
    p99Ms: result.latency.p99Ms,
    clientCpuS: cpu?.clientS,
    serverCpuS: cpu?.serverS,
    otherCpuS: other,
  }
}

const ALL_VARIANTS: readonly VariantKey[] = [
  'raw',
  'keel',
  'keel-where',
  'set-config',
  'pipeline',
  'txn',
  'raw-prepared',
  'raw-app-fixed',
  'raw-app-fixed-prepared',
  'keel-bypass',
  'keel-no-timeout',
  'keel-no-cache',
]

/** BENCH_VARIANTS=keel,keel-no-timeout narrows a comparison (raw is always measured, first). */
function selectVariants(defaults: readonly VariantKey[]): VariantKey[] {
  const raw = process.env.BENCH_VARIANTS
  if (raw === undefined || raw.trim() === '') return [...defaults]
  const picked = raw.split(',').map((k) => k.trim()) as VariantKey[]
  const unknown = picked.filter((k) => !ALL_VARIANTS.includes(k))
  if (unknown.length > 0)
    throw new Error(`unknown BENCH_VARIANTS ${unknown.join(', ')}; known: ${ALL_VARIANTS.join(', ')}`)
  return ['raw', ...picked.filter((k) => k !== 'raw')]
}

async function compare(
  title: string,
  endpoint: Endpoint,
  keys: readonly VariantKey[],
  rounds: number,
  cpu: CpuMeter,
  serialSeconds: number | undefined,
): Promise<ComparisonRecord> {
  const variants = selectVariants(keys).map((key) => makeVariant(key, endpoint))
  const results = new Map<VariantKey, LoopResult[]>(variants.map((v) => [v.key, []]))
  const serial = new Map<VariantKey, LoopResult>()
  try {
    process.stdout.write(`\n${title}\n  warm-up ${settings.warmupSeconds}s each:`)
    for (const variant of variants) {
      await closedLoop(variant.op, { concurrency: settings.concurrency, seconds: settings.warmupSeconds })
      process.stdout.write(` ${variant.key}`)
    }
    process.stdout.write('\n')
    for (let round = 0; round < rounds; round++) {
      // Alternate the order so slow drift (other load, caches, thermal) weighs on every variant alike.
      const order = round % 2 === 0 ? variants : [...variants].reverse()
      const line: string[] = []
      for (const variant of order) {
        const result = await closedLoop(variant.op, {
          concurrency: settings.concurrency,
          seconds: settings.seconds,
          cpu,
        })
        results.get(variant.key)!.push(result)
        line.push(
          `${variant.key} ${fmtInt(result.qps)}${result.errors > 0 ? ` (${result.errors} errors)` : ''}`,
        )
      }
      console.log(`  round ${round + 1}/${rounds}: ${line.join(', ')} q/s`)
    }
    if (serialSeconds !== undefined) {
      const line: string[] = []
      for (const variant of variants) {
        const result = await closedLoop(variant.op, { concurrency: 1, seconds: serialSeconds })
        serial.set(variant.key, result)
        line.push(`${variant.key} ${fmt(result.latency.meanMs)}`)
      }
      console.log(`  one caller: ${line.join(', ')} ms/op`)
    }
  } finally {
    await Promise.all(variants.map((v) => v.close()))
  }

  const rawRounds = results.get('raw')!
  const rawMedian = median(rawRounds.map((r) => r.qps))
  const rawSerial = serial.get('raw')
  const records = variants.map((variant): VariantRecord => {
    const list = results.get(variant.key)!
    const roundsOut = list.map(toRound)
    const paired = list.map((r, i) => r.qps / rawRounds[i]!.qps)
    const totalOps = list.reduce((a, r) => a + r.ops, 0)
    const sumOf = (pick: (r: RoundRecord) => number | undefined): number | undefined => {
      let total = 0
      for (const r of roundsOut) {
        const v = pick(r)
        if (v === undefined) return undefined
        total += v
      }
      return total
    }
    const client = sumOf((r) => r.clientCpuS)
    const server = sumOf((r) => r.serverCpuS)
    const serialResult = serial.get(variant.key)
    const record: VariantRecord = {
      key: variant.key,
      label: variant.label,
      roundTrips: variant.roundTrips,
      rounds: roundsOut,
      medianQps: median(list.map((r) => r.qps)),
      ratioToRaw: median(list.map((r) => r.qps)) / rawMedian,
      pairedRatio: { median: median(paired), min: Math.min(...paired), max: Math.max(...paired) },
      meanMs: median(roundsOut.map((r) => r.meanMs)),
      p50Ms: median(roundsOut.map((r) => r.p50Ms)),
      p99Ms: median(roundsOut.map((r) => r.p99Ms)),
      clientCpuUsPerQuery: client === undefined || totalOps === 0 ? undefined : (client * 1e6) / totalOps,
      serverCpuUsPerQuery: server === undefined || totalOps === 0 ? undefined : (server * 1e6) / totalOps,
      errors: list.reduce((a, r) => a + r.errors, 0),
      firstError: list.find((r) => r.firstError !== undefined)?.firstError,
    }
    if (serialResult !== undefined && rawSerial !== undefined) {
      record.serial = {
        meanMs: serialResult.latency.meanMs,
        p50Ms: serialResult.latency.p50Ms,
        p99Ms: serialResult.latency.p99Ms,
        ops: serialResult.ops,
        ratioToRaw: rawSerial.latency.meanMs / serialResult.latency.meanMs,
      }
    }
    return record
  })
  const otherPerSecond = [...results.values()]
    .flat()
    .map(toRound)
    .map((r) => (r.otherCpuS === undefined ? undefined : r.otherCpuS / r.elapsedS))
  return {
    date: new Date().toISOString(),
    endpoint: new URL(endpoint.appUrl).host,
    concurrency: settings.concurrency,
    poolMax: settings.poolMax,
    seconds: settings.seconds,
    rounds,
    warmupSeconds: settings.warmupSeconds,
    variants: records,
    otherCpuCores: otherPerSecond.some((v) => v === undefined)
      ? undefined
      : median(otherPerSecond as number[]),
  }
}

function ratioCell(v: VariantRecord): string {
  if (v.key === 'raw') return '1.00x'
  return `${fmtRatio(v.ratioToRaw)} (${v.pairedRatio.min.toFixed(2)}–${v.pairedRatio.max.toFixed(2)})`
}

function loopbackTable(record: ComparisonRecord): string {
  return markdownTable(
    [
      'variant',
      'round trips',
      'q/s (median)',
      'vs raw (range)',
      'mean ms',
      'p99 ms',
      'client CPU µs/q',
      'PG CPU µs/q',
    ],
    record.variants.map((v) => [
      v.label,
      v.roundTrips,
      fmtInt(v.medianQps),
      ratioCell(v),
      fmt(v.meanMs),
      fmt(v.p99Ms),
      fmtInt(v.clientCpuUsPerQuery),
      fmtInt(v.serverCpuUsPerQuery),
    ]),
    [false, true, true, true, true, true, true, true],
  )
}

function proxyTable(record: ComparisonRecord): string {
  return markdownTable(
    [
      'variant',
      'round trips',
      'q/s (median)',
      'vs raw (range)',
      'mean ms (32 callers)',
      'ms/op (1 caller)',
      'vs raw (1 caller)',
    ],
    record.variants.map((v) => [
      v.label,
      v.roundTrips,
      fmtInt(v.medianQps),
      ratioCell(v),
      fmt(v.meanMs),
      fmt(v.serial?.meanMs),
      v.key === 'raw' ? '1.00x' : fmtRatio(v.serial?.ratioToRaw),
    ]),
    [false, true, true, true, true, true, true],
  )
}

// ---------------------------------------------------------------------------------------- noisy neighbour

interface NoisyRun {
  name: string
  flood: boolean
  tenantCap: number
  quiet: {
    p50Ms: number
    p99Ms: number
    meanMs: number
    maxMs: number
    calls: number
    qps: number
    errors: number
  }
  flooder?: {
    completed: number
    reportsPerS: number
    busy: number
    errors: number
  }
}

interface NoisyRecord {
  date: string
  poolMax: number
  quietCallers: number
  floodCallers: number
  floodSql: string
  seconds: number
  runs: NoisyRun[]
  p99RatioCapped: number
  p99RatioUncapped: number
}

async function noisyRun(
  stack: Stack,
  name: string,
  limits: NonNullable<KeelConfig['limits']>,
  flood: boolean,
): Promise<NoisyRun> {
  const keel = createKeel({
    postgres: {
      primary: { connectionString: stack.primary.url },
      pool: { max: settings.poolMax, idleTimeoutMs: 0, connectionTimeoutMs: 60_000 },
    },
    tenancy: { mode: 'rls' },
    // A long acquire timeout: the flooding tenant's excess calls wait in keel's per-tenant queue.
    limits: { acquireTimeoutMs: 60_000, ...limits },
  })
  const tenantA = 't000'
  const tenantB = 't001'
  const quietOp = async () => expectOneRow(await keel.tenant(tenantB).query(RLS_SQL, [pickId()]))
  try {
    // Open every pooled connection up front (ten tenants, one short statement each), then warm B up.
    await Promise.all(
      tenantIds.slice(2, 2 + settings.poolMax).map((t) => keel.tenant(t).query('SELECT pg_sleep(0.05)')),
    )
    await closedLoop(quietOp, { concurrency: settings.noisy.quietCallers, seconds: 0.5 })

    const abort = new AbortController()
    // All of A's callers share one signal: more than ten listeners on it at once is expected here.
    setMaxListeners(0, abort.signal)
    let stopped = false
    const flooder = { completed: 0, busy: 0, errors: 0 }
    const floodLoops: Promise<void>[] = []
    if (flood) {
      const a = keel.tenant(tenantA)
      for (let i = 0; i < settings.noisy.floodCallers; i++) {
        floodLoops.push(
          (async () => {
            while (!stopped) {
              try {
                await a.query(settings.noisy.floodSql, [], { signal: abort.signal })
                flooder.completed++
              } catch (error) {
                if (stopped) return
                if (isKeelError(error) && error.code === 'KEEL_TENANT_BUSY') flooder.busy++
                else flooder.errors++
                await sleep(10)
              }
            }
          })(),
        )
      }
      await sleep(1_000) // A now holds every connection it can get; its other callers are queued
    }
    const completedBefore = flooder.completed
    const measureStarted = performance.now()
    const quiet = await closedLoop(quietOp, {
      concurrency: settings.noisy.quietCallers,
      seconds: settings.noisySeconds,
    })
    const measuredS = (performance.now() - measureStarted) / 1_000
    const completedDuring = flooder.completed - completedBefore
    stopped = true
    abort.abort()
    await Promise.all(floodLoops)
    const tenantCap = keel.config.limits.tenantConnections
    return {
      name,
      flood,
      tenantCap:
        tenantCap < 1
          ? Math.max(1, Math.floor(tenantCap * settings.poolMax))
          : Math.min(settings.poolMax, tenantCap),
      quiet: {
        p50Ms: quiet.latency.p50Ms,
        p99Ms: quiet.latency.p99Ms,
        meanMs: quiet.latency.meanMs,
        maxMs: quiet.latency.maxMs,
        calls: quiet.ops,
        qps: quiet.qps,
        errors: quiet.errors,
      },
      ...(flood
        ? {
            flooder: {
              completed: completedDuring,
              reportsPerS: completedDuring / measuredS,
              busy: flooder.busy,
              errors: flooder.errors,
            },
          }
        : {}),
    }
  } finally {
    await keel.close()
  }
}

async function noisyScenario(stack: Stack): Promise<NoisyRecord> {
  console.log(
    `\nNoisy neighbour: tenant B (${settings.noisy.quietCallers} callers, point selects, ${settings.noisySeconds}s) vs tenant A (${settings.noisy.floodCallers} callers looping ${settings.noisy.floodSql}), pool max ${settings.poolMax}`,
  )
  const runs: NoisyRun[] = []
  const plan: Array<[string, NonNullable<KeelConfig['limits']>, boolean]> = [
    ['B alone (default limits)', {}, false],
    ['B under A flood, no cap (tenantConnections: 10)', { tenantConnections: settings.poolMax }, true],
    ['B under A flood, default cap (tenantConnections: 0.5)', {}, true],
  ]
  for (const [name, limits, flood] of plan) {
    const run = await noisyRun(stack, name, limits, flood)
    runs.push(run)
    console.log(
      `  ${name}: B p50 ${fmt(run.quiet.p50Ms)} ms, p99 ${fmt(run.quiet.p99Ms)} ms (${run.quiet.calls} calls)${
        run.flooder ? `; A ${fmt(run.flooder.reportsPerS, 1)} reports/s` : ''
      }`,
    )
  }
  const alone = runs[0]!.quiet.p99Ms
  return {
    date: new Date().toISOString(),
    poolMax: settings.poolMax,
    quietCallers: settings.noisy.quietCallers,
    floodCallers: settings.noisy.floodCallers,
    floodSql: settings.noisy.floodSql,
    seconds: settings.noisySeconds,
    runs,
    p99RatioUncapped: runs[1]!.quiet.p99Ms / alone,
    p99RatioCapped: runs[2]!.quiet.p99Ms / alone,
  }
}

function noisyTable(record: NoisyRecord): string {
  const alone = record.runs[0]!.quiet.p99Ms
  return markdownTable(
    [
      'run',
      'A cap',
      'B p50 ms',
      'B p99 ms',
      'B p99 / alone',
      'B q/s',
      'B calls',
      'A reports/s',
      'A busy/errors',
    ],
    record.runs.map((r) => [
      r.name,
      r.flood ? `${r.tenantCap} of ${record.poolMax}` : '–',
      fmt(r.quiet.p50Ms),
      fmt(r.quiet.p99Ms),
      fmtRatio(r.quiet.p99Ms / alone),
      fmtInt(r.quiet.qps),
      String(r.quiet.calls),
      r.flooder ? fmt(r.flooder.reportsPerS, 1) : '–',
      r.flooder ? `${r.flooder.busy}/${r.flooder.errors}` : '–',
    ]),
    [false, true, true, true, true, true, true, true, true],
  )
}

// -------------------------------------------------------------------------------------------- reporting

interface Meta extends MachineMeta {
  pgClient: string
  postgres: string
  settings: typeof settings
}

interface Results {
  meta: Meta
  loopback?: ComparisonRecord
  proxy?: ComparisonRecord
  noisy?: NoisyRecord
  breakdown?: ComparisonRecord
}

async function collectMeta(stack: Stack): Promise<Meta> {
  const client = new pg.Client({ connectionString: stack.primary.superUrl })
  await client.connect()
  let postgres = 'unknown'
  try {
    postgres = (await client.query<{ v: string }>('SELECT version() AS v')).rows[0]?.v ?? postgres
  } finally {
    await client.end()
  }
  const require = createRequire(import.meta.url)
  return {
    ...machineMeta(),
    pgClient: (require('pg/package.json') as { version: string }).version,
    postgres,
    settings,
  }
}

function findings(results: Results): string[] {
  const out: string[] = []
  const keelRatio = (record: ComparisonRecord | undefined) =>
    record?.variants.find((v) => v.key === 'keel')?.ratioToRaw
  const loop = keelRatio(results.loopback)
  if (loop !== undefined) out.push(`keel vs raw on loopback: ${fmtRatio(loop)} (target ≥ 0.90x)`)
  const proxy = keelRatio(results.proxy)
  if (proxy !== undefined) {
    out.push(`keel vs raw through the ${results.proxy?.delayMsEachWay} ms-each-way proxy: ${fmtRatio(proxy)}`)
  }
  if (results.noisy !== undefined) {
    out.push(
      `B's p99 under A's flood: ${fmtRatio(results.noisy.p99RatioCapped)} of B alone with the cap, ${fmtRatio(results.noisy.p99RatioUncapped)} without (target ≤ 1.5x)`,
    )
  }
  return out
}

function when(iso: string): string {
  return `Measured ${iso.slice(0, 16).replace('T', ' ')} UTC`
}

function renderMarkdown(results: Results): string {
  const m = results.meta
  const parts: string[] = []
  parts.push(
    `Measured ${m.date.slice(0, 10)} on ${m.cores} cores (${m.cpuModel}), Node ${m.node}, pg ${m.pgClient}, ${m.postgres.split(' ').slice(0, 2).join(' ')}. ` +
      `100 tenants x 1000 rows, uniform random tenant and id per call, ${m.settings.concurrency} concurrent callers, pool max ${m.settings.poolMax}, RLS on for every keel and context row. ` +
      'The raw baseline is a superuser `pg.Pool` filtering on `tenant_id` itself (RLS does not apply to it).',
  )
  const summary = findings(results)
  if (summary.length > 0) parts.push(summary.map((line) => `- ${line}`).join('\n'))
  if (results.loopback !== undefined) {
    const r = results.loopback
    parts.push(
      `### Throughput on loopback\n\n${when(r.date)}: ${r.rounds} alternating rounds of ${r.seconds} s per variant after a ${r.warmupSeconds} s warm-up; median q/s, ratio of medians to raw (range of the per-round ratios). CPU columns: this process (client) and the Postgres backends serving it, per query. ` +
        "keel keeps each connection's statements prepared (`postgres.statementCacheSize`, default 256) while a plain `pool.query(text, values)` has Postgres parse and plan every call; the named-prepared-statement row shows raw pg with that advantage too. " +
        `Absolute q/s swing with the machine's load; compare rows within one table.\n\n${loopbackTable(r)}`,
    )
    if (r.otherCpuCores !== undefined && r.otherCpuCores > 0.25) {
      parts.push(
        `_Other processes used ${r.otherCpuCores.toFixed(2)} cores during this run, so these numbers are noisier than on an idle machine._`,
      )
    }
  }
  if (results.proxy !== undefined) {
    const r = results.proxy
    parts.push(
      `### Through a ${r.delayMsEachWay} ms-each-way delay proxy\n\n${when(r.date)}: every chunk held ${r.delayMsEachWay} ms in each direction by a TCP proxy in a child process (round trips dominate, as from an app to a cloud database). ${r.rounds} alternating rounds of ${r.seconds} s; "1 caller" is a single caller's mean latency per op.\n\n${proxyTable(r)}`,
    )
  }
  if (results.noisy !== undefined) {
    const r = results.noisy
    parts.push(
      `### Noisy neighbour\n\n${when(r.date)}. Tenant A: ${r.floodCallers} callers looping \`${r.floodSql}\`. Tenant B: ${r.quietCallers} callers doing point selects for ${r.seconds} s. One keel instance per run, pool max ${r.poolMax}, acquireTimeoutMs 60000. The cap is keel's default \`limits.tenantConnections: 0.5\`.\n\n${noisyTable(r)}\n\nB's p99 under the flood: **${fmtRatio(r.p99RatioCapped)}** of B alone with the cap, ${fmtRatio(r.p99RatioUncapped)} without it.`,
    )
  }
  if (results.breakdown !== undefined) {
    const r = results.breakdown
    parts.push(
      `### Where keel's loopback cost goes\n\n${when(r.date)}, \`node bench/dist/tenancy.js breakdown\`: the same loop, ${r.rounds} rounds of ${r.seconds} s; each row adds or removes one ingredient of the keel row (prepared statements, RLS, the scoping statement, its statement_timeout setting).\n\n${loopbackTable(r)}`,
    )
  }
  return `${parts.join('\n\n')}\n`
}

// ------------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const scenarios = parseScenarios(process.argv[2])
  const started = performance.now()
  const stack = readStack()
  const { seeded, setupS } = await setup(stack)
  await sanityCheck(stack)
  const meta = await collectMeta(stack)
  const appUrl = stack.primary.url
  const superUrl = stack.primary.superUrl
  const cpu = new CpuMeter(superUrl)
  await cpu.start()
  console.log(
    `keel tenancy bench: ${meta.cores} cores, Node ${meta.node}, pg ${meta.pgClient}, ${meta.postgres.split(',')[0]}\n` +
      `${settings.tenants} tenants x ${settings.rowsPerTenant} rows (${seeded ? 'seeded' : 'already seeded'}, setup ${setupS.toFixed(1)} s), ` +
      `${settings.concurrency} callers, pool max ${settings.poolMax}, ${settings.rounds} rounds x ${settings.seconds} s; scenarios: ${scenarios.join(', ')}`,
  )

  const results: Results = { ...previousResults<Results>('tenancy'), meta }

  if (scenarios.includes('throughput')) {
    results.loopback = await compare(
      `Throughput on loopback (${stack.primary.host}:${stack.primary.port})`,
      { appUrl, superUrl },
      ['raw', 'keel', 'keel-where', 'raw-prepared', 'set-config', 'pipeline', 'txn'],
      settings.rounds,
      cpu,
      undefined,
    )
  }
  if (scenarios.includes('proxy')) {
    const proxy = await startDelayProxy(stack.primary.host, stack.primary.port, settings.proxyDelayMs)
    try {
      const through = (url: string) => withHostPort(url, '127.0.0.1', proxy.port)
      const record = await compare(
        `Throughput through a ${settings.proxyDelayMs} ms-each-way delay proxy (127.0.0.1:${proxy.port})`,
        { appUrl: through(appUrl), superUrl: through(superUrl) },
        ['raw', 'keel', 'keel-where', 'set-config', 'pipeline', 'txn'],
        settings.proxyRounds,
        cpu,
        settings.serialSeconds,
      )
      record.delayMsEachWay = settings.proxyDelayMs
      results.proxy = record
    } finally {
      await proxy.stop()
    }
  }
  if (scenarios.includes('noisy')) results.noisy = await noisyScenario(stack)
  if (scenarios.includes('breakdown')) {
    results.breakdown = await compare(
      'Breakdown on loopback: each row removes one ingredient of the keel row',
      { appUrl, superUrl },
      [
        'raw',
        'raw-prepared',
        'raw-app-fixed',
        'raw-app-fixed-prepared',
        'keel-bypass',
        'keel-no-cache',
        'keel-no-timeout',
        'keel',
      ],
      settings.rounds,
      cpu,
      undefined,
    )
  }

  // Print the tables of this run.
  const printComparison = (heading: string, table: string, record: ComparisonRecord): void => {
    console.log(`\n## ${heading}\n\n${table}`)
    for (const v of record.variants.filter((x) => x.errors > 0)) {
      console.log(`  ! ${v.key}: ${v.errors} errors, first: ${v.firstError}`)
    }
    if (record.otherCpuCores !== undefined && record.otherCpuCores > 0.1) {
      const who =
        record.delayMsEachWay === undefined ? 'other processes' : 'other processes (the delay proxy included)'
      console.log(`  (${who} used ${record.otherCpuCores.toFixed(2)} cores meanwhile, median)`)
    }
  }
  if (scenarios.includes('throughput') && results.loopback) {
    printComparison('Throughput on loopback', loopbackTable(results.loopback), results.loopback)
  }
  if (scenarios.includes('proxy') && results.proxy) {
    printComparison(
      `Through a ${settings.proxyDelayMs} ms-each-way delay proxy`,
      proxyTable(results.proxy),
      results.proxy,
    )
  }
  if (scenarios.includes('noisy') && results.noisy) {
    console.log(`\n## Noisy neighbour\n\n${noisyTable(results.noisy)}`)
  }
  if (scenarios.includes('breakdown') && results.breakdown) {
    printComparison('Breakdown on loopback', loopbackTable(results.breakdown), results.breakdown)
  }
  const summary = findings({
    meta,
    ...(scenarios.includes('throughput') && results.loopback ? { loopback: results.loopback } : {}),
    ...(scenarios.includes('proxy') && results.proxy ? { proxy: results.proxy } : {}),
    ...(scenarios.includes('noisy') && results.noisy ? { noisy: results.noisy } : {}),
  })
  if (summary.length > 0) console.log(`\n${summary.map((s) => `- ${s}`).join('\n')}`)
  await cpu.close()
  if (cpu.restarts > 0) {
    console.log(
      `\n! Postgres restarted or was unreachable ${cpu.restarts} time(s) during the run (another suite sharing the stack?): treat these numbers with suspicion.`,
    )
  }
  const written = writeResults(
    'tenancy',
    'keel tenancy benchmark',
    results,
    renderMarkdown(results),
    'results',
  )
  console.log(`\nwrote ${written.join(', ')}; total ${((performance.now() - started) / 1_000).toFixed(0)} s`)
}

runMain(main)
