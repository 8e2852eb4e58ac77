import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { cacheKeel, freshPrefix, redisClient, sleep } from './support/cache.js'
import { stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers, startWorkers, type Worker } from './support/worker.js'

let dist: string
let workers: Worker[] = []
const redis = redisClient()

beforeAll(() => {
  dist = buildForWorkers()
})
afterEach(async () => {
  await stackCtl('start', 'redis')
  await Promise.all(workers.map((w) => w.close()))
  workers = []
})
afterAll(() => redis.quit())

describe('cache across processes', () => {
  it('4 processes x 200 concurrent cold reads of one key, 100 ms loader: the loader runs exactly once', async () => {
    const prefix = freshPrefix()
    workers = await startWorkers(4, dist, prefix)
    await redis.set(`${prefix}:source:hot`, 'v1')
    const results = await Promise.all(
      workers.map((w) => w.call<string[]>('burst', { key: 'hot', n: 200, delayMs: 100 })),
    )
    const loads = Number(await redis.get(`${prefix}:loads:hot`))
    console.log(`stampede: 4 processes x 200 cold reads -> ${loads} loader call(s)`)
    expect(results).toEqual([['v1'], ['v1'], ['v1'], ['v1']])
    expect(loads).toBe(1)
  })

  it('an invalidation during a load: once invalidate() resolves, no process returns the old value', async () => {
    const prefix = freshPrefix()
    workers = await startWorkers(3, dist, prefix)
    const [a, b, c] = workers as [Worker, Worker, Worker]
    await redis.set(`${prefix}:source:report`, 'old')
    const inFlight = a.call<string>('get', { key: 'report', tags: ['reports'], delayMs: 300 })
    await sleep(100)
    await redis.set(`${prefix}:source:report`, 'new')
    await b.call('invalidate', { tags: ['reports'] })
    expect(await c.call('get', { key: 'report', tags: ['reports'] })).toBe('new')
    expect(await inFlight).toBe('new')
    expect(await b.call('get', { key: 'report', tags: ['reports'] })).toBe('new')
  })

  it("a tag invalidated in one process drops the others' L1 copies before it resolves", async () => {
    const prefix = freshPrefix()
    // A long ack timeout: the acknowledgements, not the timeout, must end invalidate()'s wait here, even
    // on a busy machine (see redis-cluster-cache.test.ts).
    workers = await startWorkers(3, dist, prefix, undefined, { invalidationAckTimeoutMs: 15_000 })
    await redis.set(`${prefix}:source:list`, 'v1')
    for (const w of workers) expect(await w.call('get', { key: 'list', tags: ['invoices'] })).toBe('v1')
    await redis.set(`${prefix}:source:list`, 'v2')
    await workers[0]!.call('invalidate', { tags: ['invoices'] })
    for (const w of workers) expect(await w.call('get', { key: 'list', tags: ['invoices'] })).toBe('v2')
    expect(Number(await redis.get(`${prefix}:loads:list`))).toBe(2)
  })

  it('Redis stopped in the middle of a read load: zero failed calls; started again: both tiers work', async () => {
    const prefix = freshPrefix()
    workers = await startWorkers(2, dist, prefix)
    const [a, b] = workers as [Worker, Worker]
    const loads = workers.map((w) =>
      w.call<{ calls: number; failureCount: number; failures: string[] }>('load', { durationMs: 3_000 }),
    )
    await sleep(500)
    await stackCtl('stop', 'redis')
    await waitFor('the breaker to open in a worker', async () => {
      const health = await a.call<{ cache: { redis: string } }>('health')
      return health.cache.redis === 'down'
    })
    await sleep(500)
    await stackCtl('start', 'redis')
    const results = await Promise.all(loads)
    for (const r of results) {
      expect(r.failures).toEqual([])
      expect(r.calls).toBeGreaterThan(100)
    }
    // Back: a value one process loads is served to the other from Redis, without loading again.
    const probe = redisClient()
    await waitFor('redis reachable', async () => (await probe.ping().catch(() => '')) === 'PONG')
    await probe.set(`${prefix}:source:after`, 'fine')
    await waitFor('the shared tier to be used again', async () => {
      const key = `after${Date.now()}`
      await probe.set(`${prefix}:source:${key}`, 'x')
      try {
        await a.call('get', { key })
        await b.call('get', { key })
      } catch {
        // The workers' own source client (offline queue off) may still be reconnecting: try again.
        return false
      }
      return Number(await probe.get(`${prefix}:loads:${key}`)) === 1
    })
    await waitFor('the breaker to close again', async () => {
      const health = await a.call<{ cache: { redis: string } }>('health')
      return health.cache.redis === 'up'
    })
    await probe.quit()
  })

  it('an invalidation made while Redis is down is applied here at once and replayed into Redis once it is back', async () => {
    const prefix = freshPrefix()
    const keel = cacheKeel({ prefix, breakerResetMs: 200 })
    try {
      const db = keel.tenant('acme')
      let source = 'v1'
      const opts = { key: 'report', tags: ['reports'] }
      expect(await db.cached(opts, async () => source)).toBe('v1')
      await stackCtl('stop', 'redis')
      source = 'v2'
      await db.invalidate({ keys: ['report'], tags: ['reports'] })
      expect(await db.cached(opts, async () => source)).toBe('v2')
      await stackCtl('start', 'redis')
      // Redis restarts empty (SHUTDOWN NOSAVE): counters at 1 are the replayed invalidation's INCRs.
      // Calls keep coming meanwhile, as in an app: they are what lets the breaker probe and close.
      await waitFor('the deferred invalidation to reach Redis', async () => {
        await db.cached(opts, async () => source)
        const [key, tag] = await redis
          .mget(`${prefix}:{t:acme}:kv:report`, `${prefix}:{t:acme}:tag:reports`)
          .catch(() => [null, null])
        return key === '1' && tag === '1'
      })
      expect(await db.cached(opts, async () => source)).toBe('v2')
    } finally {
      await keel.close()
    }
  })
})
