/**
 * keel through PgBouncer in transaction mode (ADR 0023): keel against raw node-postgres through the
 * same PgBouncer, what DISCARD ALL after every transaction (server_reset_query_always) costs, and
 * keel on a direct connection for reference. Alternating rounds; median q/s per variant.
 *
 *   node scripts/stack.mjs up pgbouncer && node bench/dist/pgbouncer.js
 *
 * Environment: BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_WARMUP_SECONDS (1), BENCH_CONCURRENCY (16),
 * BENCH_POOL_MAX (8), BENCH_PGB_VARIANTS (comma list narrowing the variants). A benchmark, not a
 * test: it never fails on timings.
 */
import { applyRlsPolicy, createKeel, type Keel } from '@keel/core'
import pg from 'pg'
import { BENCH_APPLICATION_NAME } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, type LoopResult } from './lib/load.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { runMain } from './lib/run-main.js'
import { readStack, type Stack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  seconds: envNumber('BENCH_SECONDS', 3),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 1),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 16)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 8)),
  tenants: 20,
  rowsPerTenant: 200,
}

const TABLE = 'bench_pgb_items'
const RAW_SQL = `SELECT id, body FROM ${TABLE} WHERE tenant_id = $1 AND id = $2`
const RLS_SQL = `SELECT id, body FROM ${TABLE} WHERE id = $1`
const WRITE_SQL = `UPDATE ${TABLE} SET n = n + 1 WHERE id = $1`

interface Bouncer {
  url: string
  superUrl: string
}
type PgBouncerStack = Stack & { pgbouncer?: { plain: Bouncer; discardAll: Bouncer } }

interface Variant {
  key: string
  label: string
  op(): Promise<unknown>
  close(): Promise<void>
}

const pick = (n: number) => Math.floor(Math.random() * n)
const pickTenant = () => `t${pick(settings.tenants)}`
const pickId = () => 1 + pick(settings.rowsPerTenant)

function rawVariant(key: string, label: string, connectionString: string): Variant {
  const pool = new pg.Pool({
    connectionString,
    max: settings.poolMax,
    idleTimeoutMillis: 0,
    application_name: `${BENCH_APPLICATION_NAME}-pg`,
  })
  pool.on('error', () => undefined)
  return {
    key,
    label,
    op: () => pool.query(RAW_SQL, [pickTenant(), pickId()]),
    close: () => pool.end(),
  }
}

function keelVariant(
  key: string,
  label: string,
  connectionString: string,
  options: { statementCacheSize?: number; write?: boolean; replicaUrl?: string } = {},
): Variant {
  const keel: Keel = createKeel({
    postgres: {
      primary: { connectionString },
      ...(options.replicaUrl === undefined ? {} : { replicas: [{ connectionString: options.replicaUrl }] }),
      ...(options.statementCacheSize === undefined ? {} : { statementCacheSize: options.statementCacheSize }),
      pool: { max: settings.poolMax, idleTimeoutMs: 0 },
      applicationName: `${BENCH_APPLICATION_NAME}-keel`,
    },
    tenancy: { mode: 'rls' },
  })
  return {
    key,
    label,
    op: options.write
      ? () => keel.tenant(pickTenant()).query(WRITE_SQL, [pickId()])
      : () => keel.tenant(pickTenant()).query(RLS_SQL, [pickId()]),
    close: () => keel.close(),
  }
}

function variants(stack: PgBouncerStack): Variant[] {
  const bouncers = stack.pgbouncer
  if (bouncers === undefined)
    throw new Error('no PgBouncer in .keel/stack.json: run `node scripts/stack.mjs up pgbouncer`')
  const all: Array<() => Variant> = [
    () => rawVariant('raw-pgb', 'raw pg.Pool via PgBouncer (unnamed)', bouncers.plain.superUrl),
    () => keelVariant('keel-pgb', 'keel via PgBouncer, default config', bouncers.plain.url),
    () =>
      keelVariant('keel-pgb-0', 'keel via PgBouncer, statementCacheSize 0', bouncers.plain.url, {
        statementCacheSize: 0,
      }),
    () =>
      rawVariant('raw-pgb-discard', 'raw pg.Pool via PgBouncer + DISCARD ALL', bouncers.discardAll.superUrl),
    () => keelVariant('keel-pgb-discard', 'keel via PgBouncer + DISCARD ALL', bouncers.discardAll.url),
    () => keelVariant('keel-direct', 'keel direct to the primary', stack.primary.url),
    () =>
      keelVariant(
        'keel-direct-write',
        'keel direct, writes (replica set: BEGIN..COMMIT + WAL position)',
        stack.primary.url,
        {
          write: true,
          replicaUrl: stack.replicas![0]!.url,
        },
      ),
  ]
  const wanted = process.env.BENCH_PGB_VARIANTS?.split(',').map((s) => s.trim())
  return all.map((make) => make()).filter((v) => wanted === undefined || wanted.includes(v.key))
}

async function setup(stack: Stack): Promise<void> {
  const owner = new pg.Client({ connectionString: stack.primary.ownerUrl })
  await owner.connect()
  try {
    const exists = await owner.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [TABLE])
    if (exists.rows[0].e) return
    await owner.query(
      `CREATE TABLE ${TABLE} (tenant_id text NOT NULL, id int NOT NULL, body text NOT NULL, n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id))`,
    )
    await owner.query(
      `INSERT INTO ${TABLE} (tenant_id, id, body) SELECT 't' || t, i, md5(t || ':' || i) FROM generate_series(0, $1 - 1) t, generate_series(1, $2) i`,
      [settings.tenants, settings.rowsPerTenant],
    )
    await applyRlsPolicy(owner, { table: TABLE })
    await owner.query(`ANALYZE ${TABLE}`)
  } finally {
    await owner.end()
  }
}

async function main(): Promise<void> {
  const stack = readStack() as PgBouncerStack
  await setup(stack)
  const list = variants(stack)
  const results = new Map<string, LoopResult[]>(list.map((v) => [v.key, []]))
  for (const v of list)
    await closedLoop(v.op, { concurrency: settings.concurrency, seconds: settings.warmupSeconds })
  for (let round = 0; round < settings.rounds; round++) {
    const order = round % 2 === 0 ? list : [...list].reverse()
    const line: string[] = []
    for (const v of order) {
      const r = await closedLoop(v.op, { concurrency: settings.concurrency, seconds: settings.seconds })
      results.get(v.key)!.push(r)
      line.push(`${v.key} ${fmtInt(r.qps)}${r.errors > 0 ? ` (${r.errors} errors: ${r.firstError})` : ''}`)
    }
    console.log(`round ${round + 1}: ${line.join(', ')}`)
  }
  await Promise.all(list.map((v) => v.close()))
  const rawMedian = median(results.get('raw-pgb')?.map((r) => r.qps) ?? [])
  const rows = list.map((v) => {
    const runs = results.get(v.key)!
    const qps = median(runs.map((r) => r.qps))
    const p50 = median(runs.map((r) => r.latency.p50Ms))
    return [
      v.label,
      fmtInt(qps),
      fmt(p50),
      fmtRatio(qps / rawMedian),
      String(runs.reduce((n, r) => n + r.errors, 0)),
    ]
  })
  console.log(
    markdownTable(['variant', 'median q/s', 'p50 ms', 'vs raw via PgBouncer', 'errors'], rows, [
      false,
      true,
      true,
      true,
      true,
    ]),
  )
  console.log(
    `concurrency ${settings.concurrency}, pool max ${settings.poolMax}, ${settings.rounds} rounds of ${settings.seconds} s, load average ${(
      await import('node:os')
    )
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  )
}

runMain(main)
