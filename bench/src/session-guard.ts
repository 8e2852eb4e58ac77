/**
 * What keel's session guard costs (ADR 0022): classifying a statement with Postgres' parser, and running
 * each class. A plain statement must cost what it did; an opaque one (a user function, DO, CALL) adds
 * BEGIN/COMMIT, RESET ALL and the probe to its batch; a retire-class one (a temp table, a session
 * advisory lock) costs the next call a new connection. Writes bench/results/session-guard.{json,md}.
 *
 *   node bench/dist/session-guard.js
 *
 * Environment: BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_CONCURRENCY (8), BENCH_POOL_MAX (4),
 * BENCH_RESULTS_DIR, BENCH_BASE_CORE (the dist/index.js of an older @keel/core build: adds a plain-path
 * before/after table, both versions loaded in this process and measured in alternating rounds). A benchmark, not a test: it never fails on timings.
 */

import { loadavg } from 'node:os'
import { pathToFileURL } from 'node:url'
import { createKeel, type Keel } from '@keel/core'
import pg from 'pg'
// The classifier is internal to @keel/core; its pure functions are timed from source (bundled here).
import { loadParser, parseStatements } from '../../packages/core/src/sql/sql-parser.js'
import { statementClass } from '../../packages/core/src/sql/statement-class.js'
import { BENCH_APPLICATION_NAME } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, type LoopResult } from './lib/load.js'
import { machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  seconds: envNumber('BENCH_SECONDS', 3),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 8)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 4)),
}

const PARSE_CASES = {
  short: 'SELECT id, payload FROM bench_items WHERE id = $1',
  medium: `WITH recent AS (SELECT tenant_id, id, payload, row_number() OVER (PARTITION BY tenant_id ORDER BY id DESC) AS rn
             FROM bench_items WHERE id > $1) SELECT r.id, upper(r.payload) AS p, count(*) OVER () AS total
           FROM recent r LEFT JOIN bench_items b ON b.tenant_id = r.tenant_id AND b.id = r.id + 1
           WHERE r.rn <= 10 AND coalesce(b.payload, '') <> '' ORDER BY r.id LIMIT 50`,
  long: `INSERT INTO bench_items (tenant_id, id, payload) VALUES ${Array.from({ length: 200 }, (_, i) => `($1, ${i}, 'p${i}')`).join(', ')}`,
}

/** µs per call of `fn`, median of 5 batches. */
function timeMicros(fn: (i: number) => unknown, iterations: number): number {
  const perBatch: number[] = []
  for (let batch = 0; batch < 5; batch++) {
    const started = performance.now()
    for (let i = 0; i < iterations; i++) fn(i)
    perBatch.push(((performance.now() - started) * 1_000) / iterations)
  }
  return median(perBatch)
}

async function classifyCosts() {
  await loadParser()
  for (const sql of Object.values(PARSE_CASES)) for (let i = 0; i < 200; i++) parseStatements(sql)
  const rows: Array<{
    statement: string
    chars: number
    parseUs: number
    classifyUs: number
    cachedNs: number
  }> = []
  for (const [name, sql] of Object.entries(PARSE_CASES)) {
    const parseUs = timeMicros(() => parseStatements(sql), name === 'long' ? 200 : 2_000)
    // A fresh text each call (a trailing comment) misses the cache: parse + tree walk.
    const classifyUs = timeMicros(
      (i) => statementClass(`${sql} -- ${i}-${Math.random()}`),
      name === 'long' ? 200 : 2_000,
    )
    statementClass(sql)
    const cachedNs = timeMicros(() => statementClass(sql), 200_000) * 1_000
    rows.push({ statement: name, chars: sql.length, parseUs, classifyUs, cachedNs })
  }
  return rows
}

const FN = 'bench_guard_next'
const CLASSES = {
  plain: { sql: 'SELECT $1::int + 1 AS n', values: [1] },
  opaque: { sql: `SELECT ${FN}($1::int) AS n`, values: [1] },
  lock: { sql: 'SELECT pg_try_advisory_lock($1::int) AS n', values: [1] },
  retire: { sql: 'CREATE TEMP TABLE bench_guard_staging (n int)', values: [] },
} as const
type ClassKey = keyof typeof CLASSES

async function setup(): Promise<void> {
  const owner = new pg.Client({ connectionString: readStack().primary.ownerUrl })
  await owner.connect()
  try {
    await owner.query(
      `CREATE OR REPLACE FUNCTION ${FN}(n int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT n + 1'`,
    )
  } finally {
    await owner.end()
  }
}

function keelOnPrimary(create: typeof createKeel = createKeel): Keel {
  return create({
    postgres: {
      primary: { connectionString: readStack().primary.url },
      pool: { max: settings.poolMax, idleTimeoutMs: 0 },
      applicationName: `${BENCH_APPLICATION_NAME}-guard`,
    },
  })
}

interface ClassRow {
  key: ClassKey
  serialMs: number
  qps: number
  p99Ms: number
  connects: number
}

async function runClasses(): Promise<ClassRow[]> {
  const keel = keelOnPrimary()
  const db = keel.tenant('t001')
  const counts = new Map<ClassKey, { serial: number[]; qps: number[]; p99: number[]; connects: number }>()
  // Connections the pool opens: the cost of retiring shows up as reconnects.
  const su = new pg.Client({ connectionString: readStack().primary.superUrl })
  await su.connect()
  try {
    for (const key of Object.keys(CLASSES) as ClassKey[])
      await db.query(CLASSES[key].sql, CLASSES[key].values)
    for (let round = 0; round < settings.rounds; round++) {
      for (const key of Object.keys(CLASSES) as ClassKey[]) {
        const { sql, values } = CLASSES[key]
        const entry = counts.get(key) ?? { serial: [], qps: [], p99: [], connects: 0 }
        const before = await sessions(su)
        const serial: LoopResult = await closedLoop(() => db.query(sql, values), {
          concurrency: 1,
          seconds: settings.seconds / 2,
        })
        const loaded = await closedLoop(() => db.query(sql, values), {
          concurrency: settings.concurrency,
          seconds: settings.seconds,
        })
        entry.connects += (await sessions(su)) - before
        entry.serial.push(serial.latency.meanMs)
        entry.qps.push(loaded.qps)
        entry.p99.push(loaded.latency.p99Ms)
        counts.set(key, entry)
        if (serial.errors + loaded.errors > 0)
          throw new Error(`${key}: ${serial.firstError ?? loaded.firstError}`)
      }
    }
  } finally {
    await su.end()
    await keel.close()
  }
  return (Object.keys(CLASSES) as ClassKey[]).map((key) => {
    const e = counts.get(key)!
    return {
      key,
      serialMs: median(e.serial),
      qps: median(e.qps),
      p99Ms: median(e.p99),
      connects: e.connects,
    }
  })
}

/** Sessions ever opened to the database (pg_stat_database.sessions): the stack is this checkout's own. */
async function sessions(su: pg.Client): Promise<number> {
  const r = await su.query<{ n: string }>(
    'SELECT sessions AS n FROM pg_stat_database WHERE datname = current_database()',
  )
  return Number(r.rows[0]?.n ?? 0)
}

interface BeforeAfter {
  version: 'before' | 'after'
  serialMs: number
  qps: number
}

/** The plain path with an older build and this one, alternating rounds so load drifts hit both. */
async function plainBeforeAfter(): Promise<BeforeAfter[] | undefined> {
  const basePath = process.env.BENCH_BASE_CORE
  if (basePath === undefined) return undefined
  const base = (await import(pathToFileURL(basePath).href)) as { createKeel: typeof createKeel }
  const keels = { before: keelOnPrimary(base.createKeel), after: keelOnPrimary() }
  const samples = {
    before: { serial: [] as number[], qps: [] as number[] },
    after: { serial: [] as number[], qps: [] as number[] },
  }
  const { sql, values } = CLASSES.plain
  try {
    for (const keel of Object.values(keels)) await keel.tenant('t001').query(sql, values)
    const rounds = settings.rounds * 3
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (['before', 'after'] as const) : (['after', 'before'] as const)
      for (const version of order) {
        const db = keels[version].tenant('t001')
        const serial = await closedLoop(() => db.query(sql, values), {
          concurrency: 1,
          seconds: settings.seconds / 3,
        })
        const loaded = await closedLoop(() => db.query(sql, values), {
          concurrency: settings.concurrency,
          seconds: settings.seconds / 2,
        })
        samples[version].serial.push(serial.latency.meanMs)
        samples[version].qps.push(loaded.qps)
      }
    }
  } finally {
    await Promise.all(Object.values(keels).map((k) => k.close()))
  }
  return (['before', 'after'] as const).map((version) => ({
    version,
    serialMs: median(samples[version].serial),
    qps: median(samples[version].qps),
  }))
}

async function main(): Promise<void> {
  const meta = machineMeta()
  await setup()
  const parse = await classifyCosts()
  const classes = await runClasses()
  const beforeAfter = await plainBeforeAfter()
  const plain = classes.find((c) => c.key === 'plain')!
  const label: Record<ClassKey, string> = {
    plain: `plain: \`${CLASSES.plain.sql}\``,
    opaque: `opaque: \`${CLASSES.opaque.sql}\` (+ BEGIN, COMMIT, RESET ALL, probe)`,
    lock: `opaque: \`${CLASSES.lock.sql}\` (released by the probe)`,
    retire: `retire: \`${CLASSES.retire.sql}\` (connection destroyed after each call)`,
  }
  const md = [
    `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${meta.cores} cores, Node ${process.version}, load average ${loadavg()
      .map((n) => n.toFixed(2))
      .join(' ')}.`,
    '',
    '### Classifying a statement (once per distinct text; then an LRU hit)',
    '',
    markdownTable(
      ['statement', 'chars', 'parse µs', 'classify µs (miss)', 'classify ns (hit)'],
      parse.map((r) => [
        r.statement,
        fmtInt(r.chars),
        fmt(r.parseUs, 1),
        fmt(r.classifyUs, 1),
        fmt(r.cachedNs, 0),
      ]),
    ),
    '',
    `### Each class through keel (RLS, one primary, pool max ${settings.poolMax})`,
    '',
    `Median of ${settings.rounds} rounds: mean latency of 1 serial caller, q/s and p99 of ${settings.concurrency} callers; sessions opened on the server during the runs (pg_stat_database.sessions, counted by the superuser's own check too).`,
    '',
    markdownTable(
      [
        'class',
        'serial ms',
        'vs plain',
        `q/s (${settings.concurrency} callers)`,
        'vs plain',
        'p99 ms',
        'connections opened',
      ],
      classes.map((c) => [
        label[c.key],
        fmt(c.serialMs),
        fmtRatio(c.serialMs / plain.serialMs),
        fmtInt(c.qps),
        fmtRatio(c.qps / plain.qps),
        fmt(c.p99Ms),
        fmtInt(c.connects),
      ]),
    ),
    '',
    ...(beforeAfter === undefined
      ? []
      : [
          '### Plain path, before and after',
          '',
          `\`${CLASSES.plain.sql}\` through the build of \`BENCH_BASE_CORE\` (before: two regex guards) and this one (after: parser class, an LRU hit), both in this process, ${settings.rounds * 3} alternating rounds; medians.`,
          '',
          markdownTable(
            ['version', 'serial ms', `q/s (${settings.concurrency} callers)`, 'vs before'],
            beforeAfter.map((r) => [
              r.version,
              fmt(r.serialMs, 3),
              fmtInt(r.qps),
              fmtRatio(r.qps / beforeAfter[0]!.qps),
            ]),
          ),
          '',
        ]),
  ].join('\n')
  console.log(md)
  writeResults('session-guard', "keel's session guard", { meta, settings, parse, classes, beforeAfter }, md)
}

runMain(main)
