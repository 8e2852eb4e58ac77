import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { StackRedisSentinel } from '../../../scripts/stack/client.mjs'
import type { Keel } from '../src/index.js'
import { freshPrefix, sleep } from './support/cache.js'
import { enqueueLoad, missingJobs } from './support/enqueue-load.js'
import { testKeel } from './support/keel.js'
import { redisSentinel, sentinelMaster } from './support/redis-topology.js'
import { stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// Cache and jobs on a Redis managed by Sentinel (issue #17): the master SIGKILLed, Sentinel promotes the
// replica, and keel follows it without a restart. The jobs suites run on Sentinel with KEEL_TEST_REDIS=sentinel.

let sentinel: StackRedisSentinel
const open: Keel[] = []

beforeAll(async () => {
  sentinel = await redisSentinel()
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})
afterAll(async () => {
  // The killed master comes back; Sentinel makes it a replica of the promoted one.
  for (const node of sentinel.nodes) await stackCtl('start', node.name as `redis-sentinel-${number}`)
})

function sentinelKeel(prefix: string, queue: string): Keel {
  const redis = { sentinels: sentinel.sentinels, name: sentinel.name }
  const keel = testKeel({
    cache: { redis: { ...redis, commandTimeoutMs: 200 }, prefix, jitter: 0, breakerResetMs: 200 },
    jobs: { redis, queue, closeTimeoutMs: 2_000 },
  })
  keel.defineJob('ping', { schema: z.object({ i: z.number() }), handler: async () => undefined })
  open.push(keel)
  return keel
}

describe('cache and jobs on Sentinel', () => {
  it('the master SIGKILLed under cached reads and enqueues: 0 failed reads, every enqueue acknowledged or a KeelError, both back on the promoted replica', async () => {
    const prefix = freshPrefix()
    const queue = `sq${randomBytes(4).toString('hex')}`
    const [a, b] = [sentinelKeel(prefix, queue), sentinelKeel(prefix, queue)]
    const db = a.tenant('acme')
    // Shared tier in use: a value loaded by a is a hit for b.
    await db.cached({ key: 'shared' }, async () => 'from-a')
    expect(await b.tenant('acme').cached({ key: 'shared' }, async () => 'from-b')).toBe('from-a')

    let stopped = false
    let reads = 0
    const readFailures: unknown[] = []
    const readers = Array.from({ length: 8 }, async (_, i) => {
      while (!stopped) {
        try {
          await db.cached({ key: `load${i % 4}`, ttlMs: 100 }, async () => {
            await sleep(5)
            return `v${i % 4}`
          })
          reads++
        } catch (error) {
          readFailures.push(error)
        }
        await sleep(2)
      }
    })
    const enqueues = enqueueLoad(db, 'ping', 4)
    await waitFor('the load to run', () => reads > 100 && enqueues.outcomes.acknowledged.length > 100)
    const victim = await sentinelMaster(sentinel)
    const killedAt = performance.now()
    await stackCtl('kill', victim as `redis-sentinel-${number}`)
    await waitFor(
      'Sentinel to promote the replica',
      async () => (await sentinelMaster(sentinel).catch(() => victim)) !== victim,
    )
    const promotedAt = performance.now()
    const ackedBefore = enqueues.outcomes.acknowledged.length
    await waitFor(
      'an enqueue acknowledged after the promotion',
      () => enqueues.outcomes.acknowledged.length > ackedBefore + 50,
      20_000,
    )
    stopped = true
    const outcomes = await enqueues.stop()
    await Promise.all(readers)
    const missing = await missingJobs(db, outcomes.acknowledged)
    console.log(
      `sentinel failover: ${reads} cached reads, ${readFailures.length} failed; ${outcomes.calls} enqueues, ` +
        `${outcomes.acknowledged.length} acknowledged, rejected ${JSON.stringify(Object.fromEntries(outcomes.rejected))}, ` +
        `slowest ${outcomes.slowestMs.toFixed(0)} ms; promotion ${((promotedAt - killedAt) / 1000).toFixed(1)} s after the kill; ` +
        `acknowledged jobs missing after the failover: ${missing}`,
    )
    expect(readFailures).toEqual([])
    expect(outcomes.other).toEqual([])
    expect([...outcomes.rejected.keys()].filter((code) => code !== 'KEEL_JOBS_UNAVAILABLE')).toEqual([])

    // Back on the promoted replica, without a restart: the shared tier again, and a job runs.
    await waitFor('the shared tier to be used again', async () => {
      const key = `after${Date.now()}`
      await db.cached({ key }, async () => 'from-a')
      return (await b.tenant('acme').cached({ key }, async () => 'from-b')) === 'from-a'
    })
    await waitFor('the cache reported up', async () => (await a.health()).cache.redis === 'up')
    let ran = 0
    a.defineJob('after', { schema: z.object({}), handler: async () => void ran++ })
    a.startWorker({ concurrency: 2 })
    const { jobId } = await db.enqueue('after', {})
    await waitFor(
      'a job enqueued after the failover to run',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
    )
    expect(ran).toBe(1)
  })
})
