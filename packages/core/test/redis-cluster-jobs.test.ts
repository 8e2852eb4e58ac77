import { randomBytes } from 'node:crypto'
import type { Cluster } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { StackRedisCluster } from '../../../scripts/stack/client.mjs'
import type { Keel } from '../src/index.js'
import { sleep } from './support/cache.js'
import { enqueueLoad, missingJobs } from './support/enqueue-load.js'
import { testKeel } from './support/keel.js'
import {
  clusterClient,
  clusterHealed,
  masterOfSlot,
  redisCluster,
  restartCluster,
} from './support/redis-topology.js'
import { stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// Jobs on a real Redis Cluster under a master failure (issue #17). The jobs suites themselves (jobs,
// jobs-fairness, jobs-outbox) run on the cluster with KEEL_TEST_REDIS=cluster.

let cluster: StackRedisCluster
let client: Cluster
const open: Keel[] = []

beforeAll(async () => {
  cluster = await redisCluster()
  client = clusterClient(cluster)
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})
afterAll(async () => {
  await restartCluster(cluster)
  client.disconnect()
})

function clusterJobsKeel(queue: string): Keel {
  const keel = testKeel({ jobs: { redis: { cluster: cluster.urls }, queue, closeTimeoutMs: 2_000 } })
  keel.defineJob('ping', { schema: z.object({ i: z.number() }), handler: async () => undefined })
  open.push(keel)
  return keel
}

describe('jobs on a Redis Cluster', () => {
  it("every key of a job's queue, keel's fair hash and idempotency claims share the queue's slot; queues spread", async () => {
    const queue = `cq${randomBytes(4).toString('hex')}`
    const keel = testKeel({ jobs: { redis: { cluster: cluster.urls }, queue, closeTimeoutMs: 2_000 } })
    open.push(keel)
    const names = Array.from({ length: 8 }, (_, i) => `job${i}`)
    for (const name of names) keel.defineJob(name, { schema: z.object({}), handler: async () => undefined })
    const db = keel.tenant('acme')
    for (const name of names) await db.enqueue(name, {}, { idempotencyKey: `once-${name}` })
    const slots = new Map<string, Set<number>>()
    for (const master of client.nodes('master')) {
      for (const key of await master.keys(`bull:{${queue}~*`)) {
        const name = /~(job\d+)\}/.exec(key)![1]!
        const set = slots.get(name) ?? new Set()
        set.add(Number(await client.cluster('KEYSLOT', key)))
        slots.set(name, set)
      }
    }
    expect([...slots.keys()].sort()).toEqual(names)
    for (const set of slots.values()) expect(set.size).toBe(1)
    const distinct = new Set([...slots.values()].map((s) => [...s][0]))
    const masters = new Set(await Promise.all([...distinct].map((slot) => masterOfSlot(cluster, slot!))))
    expect(masters.size).toBeGreaterThan(1)
  })

  it("the queue's master SIGKILLed under an enqueue load: each enqueue acknowledged or rejected with a KeelError; accepted again soon after the promotion", async () => {
    const queue = `cq${randomBytes(4).toString('hex')}`
    const keel = clusterJobsKeel(queue)
    const db = keel.tenant('acme')
    await db.enqueue('ping', { i: -1 })
    const slot = Number(await client.cluster('KEYSLOT', `bull:{${queue}~ping}:id`))
    const victim = await masterOfSlot(cluster, slot)
    const load = enqueueLoad(db, 'ping')
    await waitFor('the load to run', () => load.outcomes.acknowledged.length > 200)
    const killedAt = performance.now()
    await stackCtl('kill', victim as `redis-cluster-${number}`)
    await waitFor('a replica promoted for the queue', async () => {
      const master = await masterOfSlot(cluster, slot).catch(() => victim)
      return master !== victim
    })
    const promotedAt = performance.now()
    const ackedBefore = load.outcomes.acknowledged.length
    await waitFor(
      'an enqueue acknowledged after the promotion',
      () => load.outcomes.acknowledged.length > ackedBefore + 50,
      15_000,
    )
    const backAt = load.outcomes.acknowledgedAt[ackedBefore]!
    await sleep(200)
    const outcomes = await load.stop()
    await clusterHealed(cluster)
    const missing = await missingJobs(db, outcomes.acknowledged)
    console.log(
      `cluster failover under enqueue load: ${outcomes.calls} calls, ${outcomes.acknowledged.length} acknowledged, ` +
        `rejected ${JSON.stringify(Object.fromEntries(outcomes.rejected))}, slowest call ${outcomes.slowestMs.toFixed(0)} ms; ` +
        `promotion ${((promotedAt - killedAt) / 1000).toFixed(1)} s after the kill, enqueues accepted again ` +
        `${((backAt - promotedAt) / 1000).toFixed(1)} s after it; acknowledged jobs missing after the failover: ${missing} ` +
        '(writes the killed master had not yet replicated, see docs/runbooks/redis-failover.md)',
    )
    expect(outcomes.other).toEqual([])
    expect([...outcomes.rejected.keys()].filter((code) => code !== 'KEEL_JOBS_UNAVAILABLE')).toEqual([])
    // The same keel, no restart: enqueue and run a job on the promoted master.
    let ran = 0
    keel.defineJob('after', { schema: z.object({}), handler: async () => void ran++ })
    keel.startWorker({ concurrency: 2 })
    const { jobId } = await db.enqueue('after', {})
    await waitFor(
      'the job enqueued after the failover to run',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
    )
    expect(ran).toBe(1)
    await stackCtl('start', victim as `redis-cluster-${number}`)
  })
})
