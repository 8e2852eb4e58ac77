/**
 * keel on a Redis Cluster (issue #17): a cache Redis hit against a raw ioredis Cluster GET + JSON.parse of
 * the same value, and enqueue throughput against raw BullMQ `Queue.add` on the same cluster. Alternating
 * rounds, medians. Writes bench/results/issue-17-cluster.{json,md}.
 *
 *   node scripts/stack.mjs up redis-cluster && node bench/dist/cluster.js
 *
 * Environment: BENCH_ROUNDS (5), BENCH_HITS (4000 awaited calls per round and variant), BENCH_ENQUEUES
 * (3000 per round and variant), BENCH_IN_FLIGHT (16 enqueue callers). A benchmark, not a test: it never
 * fails on timings.
 */
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { createKeel, type Keel } from '@keel/core'
import { Queue } from 'bullmq'
import { Cluster } from 'ioredis'
import { z } from 'zod'
import { envNumber } from './lib/env.js'
import { RAW_JOB_OPTS } from './lib/jobs-common.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const settings = {
  rounds: Math.round(envNumber('BENCH_ROUNDS', 5)),
  hits: Math.round(envNumber('BENCH_HITS', 4_000)),
  enqueues: Math.round(envNumber('BENCH_ENQUEUES', 3_000)),
  inFlight: Math.round(envNumber('BENCH_IN_FLIGHT', 16)),
}

/** A typical cached value: a small page of rows as plain JSON (about 1 KB). */
const VALUE = {
  rows: Array.from({ length: 10 }, (_, i) => ({
    id: i,
    name: `customer ${i}`,
    total: i * 12.5,
    paid: i % 2 === 0,
  })),
  page: 1,
}

function nodesOf(urls: readonly string[]) {
  return urls.map((u) => ({ host: new URL(u).hostname, port: Number(new URL(u).port) }))
}

async function timeCalls(n: number, call: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  for (let i = 0; i < n; i++) await call()
  return ((performance.now() - started) * 1_000) / n
}

async function throughput(
  n: number,
  inFlight: number,
  enqueue: (i: number) => Promise<unknown>,
): Promise<number> {
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) await enqueue(next++)
    }),
  )
  return n / ((performance.now() - started) / 1_000)
}

async function main(): Promise<number> {
  const stack = readStack() as ReturnType<typeof readStack> & { redisCluster?: { urls: string[] } }
  if (stack.redisCluster === undefined)
    throw new Error('no Redis Cluster: run `node scripts/stack.mjs up redis-cluster`')
  const urls = stack.redisCluster.urls
  const runId = randomBytes(3).toString('hex')
  const raw = new Cluster(nodesOf(urls))
  const rawJson = JSON.stringify(VALUE)
  const rawKey = `bench:{t:acme}:raw:${runId}`
  await raw.set(rawKey, rawJson)

  // keel with an L1 of one entry reading two keys in turn: every call is a Redis hit (as bench/src/cache.ts).
  const cacheKeel: Keel = createKeel({
    postgres: { primary: { connectionString: stack.primary.url } },
    cache: {
      redis: { cluster: urls },
      prefix: `b${runId}`,
      l1: { maxEntries: 1 },
      ttlMs: 3_600_000,
      jitter: 0,
    },
  })
  const db = cacheKeel.tenant('acme')
  const keys = ['a', 'b']
  let turn = 0
  for (const key of keys) await db.cached({ key }, async () => VALUE)

  const jobsQueue = `bq${runId}`
  const jobsKeel: Keel = createKeel({
    postgres: { primary: { connectionString: stack.primary.url } },
    jobs: { redis: { cluster: urls }, queue: jobsQueue },
  })
  jobsKeel.defineJob('bench', { schema: z.object({ i: z.number() }), handler: async () => undefined })
  const jobsDb = jobsKeel.tenant('acme')
  const producer = new Cluster(nodesOf(urls), { redisOptions: { maxRetriesPerRequest: 1 } })
  // BullMQ on a cluster: the queue name in braces is the hash tag of all its keys (as keel does).
  const rawQueue = new Queue(`{${jobsQueue}-raw}`, { connection: producer })

  const rows: Record<string, number[]> = { rawHit: [], keelHit: [], rawAdd: [], keelEnqueue: [] }
  // Warm-up: connections, scripts loaded on every master.
  await timeCalls(500, async () => JSON.parse((await raw.get(rawKey))!))
  await timeCalls(500, () => db.cached({ key: keys[turn++ % 2]! }, async () => VALUE))
  await throughput(500, settings.inFlight, (i) =>
    rawQueue.add('bench', { tenantId: 'acme', i }, RAW_JOB_OPTS),
  )
  await throughput(500, settings.inFlight, (i) => jobsDb.enqueue('bench', { i }))
  for (let round = 0; round < settings.rounds; round++) {
    rows.rawHit!.push(await timeCalls(settings.hits, async () => JSON.parse((await raw.get(rawKey))!)))
    rows.keelHit!.push(
      await timeCalls(settings.hits, () => db.cached({ key: keys[turn++ % 2]! }, async () => VALUE)),
    )
    rows.rawAdd!.push(
      await throughput(settings.enqueues, settings.inFlight, (i) =>
        rawQueue.add('bench', { tenantId: 'acme', i }, RAW_JOB_OPTS),
      ),
    )
    rows.keelEnqueue!.push(
      await throughput(settings.enqueues, settings.inFlight, (i) => jobsDb.enqueue('bench', { i })),
    )
    console.log(
      `round ${round + 1}: hit raw ${fmt(rows.rawHit!.at(-1))} µs, keel ${fmt(rows.keelHit!.at(-1))} µs; ` +
        `enqueue raw ${fmtInt(rows.rawAdd!.at(-1))}/s, keel ${fmtInt(rows.keelEnqueue!.at(-1))}/s`,
    )
  }
  const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)])) as Record<string, number>
  const ratio = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!)
  const hitRatios = ratio(rows.keelHit!, rows.rawHit!)
  const enqueueRatios = ratio(rows.keelEnqueue!, rows.rawAdd!)
  const range = (r: number[]) => `${fmt(Math.min(...r))}–${fmt(Math.max(...r))}`
  const date = new Date().toISOString()
  const table = markdownTable(
    ['on the 3-master Redis Cluster', 'median', 'keel / raw', 'per-round ratios', 'goal'],
    [
      ['raw ioredis Cluster `GET` + `JSON.parse` (µs per awaited call)', fmt(m.rawHit), '', '', ''],
      [
        'keel `db.cached`, Redis hit (µs per awaited call)',
        fmt(m.keelHit),
        fmtRatio(median(hitRatios)),
        range(hitRatios),
        '<= 1.1x',
      ],
      [`raw BullMQ \`Queue.add\` (jobs/s, ${settings.inFlight} in flight)`, fmtInt(m.rawAdd), '', '', ''],
      [
        `keel \`db.enqueue\` (jobs/s, ${settings.inFlight} in flight)`,
        fmtInt(m.keelEnqueue),
        fmtRatio(median(enqueueRatios)),
        range(enqueueRatios),
        '>= 0.9x',
      ],
    ],
  )
  const markdown =
    `Measured ${date}: ${settings.rounds} alternating rounds of ${settings.hits} awaited cache calls and ` +
    `${settings.enqueues} enqueues per variant, after a warm-up; median per variant, ratio of the per-round ` +
    `ratios' median. Node ${process.version}, ${os.cpus().length} CPUs shared with other work (load average ` +
    `${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(
        ' ',
      )}). The cluster runs on this machine (loopback). Raw \`Queue.add\` is set like keel's jobs, as in the ` +
    `single-Redis jobs bench (4 attempts, exponential backoff, finished jobs kept 24 h, dead letters 7 d, the tenant ` +
    `in the data); keel validates each payload with zod and adds its tenant's fair position in the same script.\n\n${table}\n`
  const written = writeResults(
    'issue-17-cluster',
    'keel on a Redis Cluster (issue #17)',
    { date, settings, medians: m, hitRatios, enqueueRatios },
    markdown,
  )
  console.log(markdown)
  console.log(`wrote ${written.join(', ')}`)
  await rawQueue.obliterate({ force: true }).catch(() => undefined)
  await rawQueue.close()
  await Promise.all([cacheKeel.close(), jobsKeel.close()])
  raw.disconnect()
  producer.disconnect()
  return 0
}

runMain(main)
