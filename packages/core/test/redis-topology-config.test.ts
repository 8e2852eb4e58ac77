import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { StackRedisCluster } from '../../../scripts/stack/client.mjs'
import { createKeel, KeelError } from '../src/index.js'
import { freshPrefix } from './support/cache.js'
import { testKeel } from './support/keel.js'
import { clusterClient, redisCluster } from './support/redis-topology.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// The four ways to name a Redis for cache.redis and jobs.redis (ADR 0039), their validation, and who
// closes what when the app hands keel an ioredis instance of its own.

const pg = 'postgres://keel_app@127.0.0.1:5999/keel'

function configError(redis: unknown, where: 'cache' | 'jobs'): KeelError {
  try {
    createKeel({ postgres: { primary: { connectionString: pg } }, [where]: { redis } } as never)
  } catch (error) {
    expect(error).toBeInstanceOf(KeelError)
    return error as KeelError
  }
  throw new Error('createKeel accepted an invalid redis config')
}

let cluster: StackRedisCluster
beforeAll(async () => {
  cluster = await redisCluster()
})

describe('Redis topologies in the config', () => {
  it.each([
    ['two forms at once', { url: 'redis://127.0.0.1:1', cluster: ['redis://127.0.0.1:2'] }],
    ['an empty cluster', { cluster: [] }],
    ['a cluster node that is not a redis URL', { cluster: ['http://127.0.0.1:2'] }],
    ['sentinels without the master name', { sentinels: ['redis://127.0.0.1:26379'] }],
    ['a client that is not ioredis', { client: { get: () => undefined } }],
    ['a typo', { clustr: ['redis://127.0.0.1:2'] }],
  ])('rejects %s, for cache.redis and jobs.redis, with KEEL_CONFIG_INVALID', (_what, redis) => {
    for (const where of ['cache', 'jobs'] as const) {
      const error = configError(redis, where)
      expect(error.code).toBe('KEEL_CONFIG_INVALID')
      expect((error.details as { fields: string[] }).fields.some((f) => f.startsWith(`${where}.redis`))).toBe(
        true,
      )
    }
  })

  it('never echoes a password of a cluster or sentinel URL', () => {
    const error = configError({ cluster: ['redis://:s3cr3t-pa55@127.0.0.1:2', 'nope'] }, 'cache')
    expect(error.message).not.toContain('s3cr3t-pa55')
  })

  it("an app's own ioredis Redis: keel duplicates it for cache and jobs, closes only its duplicates", async () => {
    const app = new Redis(readStack().redis.url)
    const name = `app-${randomBytes(3).toString('hex')}`
    await app.client('SETNAME', name)
    const clientsNow = async () => ((await app.client('LIST')) as string).trim().split('\n').length
    const before = await clientsNow()
    const keel = testKeel({
      cache: { redis: { client: app }, prefix: freshPrefix(), jitter: 0 },
      jobs: { redis: { client: app }, queue: `tq${randomBytes(4).toString('hex')}`, closeTimeoutMs: 1_000 },
    })
    keel.defineJob('hello', { schema: z.object({}), handler: async () => undefined })
    const db = keel.tenant('acme')
    expect(await db.cached({ key: 'k' }, async () => 'v')).toBe('v')
    const { jobId } = await db.enqueue('hello', {})
    expect(await db.jobStatus(jobId)).not.toBeNull()
    expect(await clientsNow()).toBeGreaterThan(before)
    await keel.close()
    // The app's connection is untouched and still its own; keel's are gone.
    expect(app.status).toBe('ready')
    expect(await app.client('GETNAME')).toBe(name)
    await waitFor("keel's connections to close", async () => (await clientsNow()) === before)
    await app.quit()
  })

  it("an app's own ioredis Cluster: cache and jobs work through duplicates, the app's cluster stays open", async () => {
    const app = clusterClient(cluster)
    const keel = testKeel({
      cache: { redis: { client: app }, prefix: freshPrefix(), jitter: 0 },
      jobs: { redis: { client: app }, queue: `tq${randomBytes(4).toString('hex')}`, closeTimeoutMs: 1_000 },
    })
    let ran = 0
    keel.defineJob('hello', { schema: z.object({}), handler: async () => void ran++ })
    keel.startWorker({ concurrency: 1 })
    const db = keel.tenant('acme')
    expect(await db.cached({ key: 'k' }, async () => 'v')).toBe('v')
    const { jobId } = await db.enqueue('hello', {}, { idempotencyKey: 'once' })
    expect((await db.enqueue('hello', {}, { idempotencyKey: 'once' })).jobId).toBe(jobId)
    await waitFor('the job to run', async () => (await db.jobStatus(jobId))?.state === 'completed')
    expect(ran).toBe(1)
    await keel.close()
    expect(await app.ping()).toBe('PONG')
    app.disconnect()
  })

  it('a cluster none of whose nodes answers: cached() serves from its loader, enqueue() is a KeelError, close() returns', async () => {
    const dead = ['redis://127.0.0.1:1', 'redis://127.0.0.1:2']
    const keel = testKeel({
      cache: { redis: { cluster: dead, commandTimeoutMs: 100 }, prefix: freshPrefix(), jitter: 0 },
      jobs: { redis: { cluster: dead }, queue: `tq${randomBytes(4).toString('hex')}`, closeTimeoutMs: 500 },
    })
    keel.defineJob('hello', { schema: z.object({}), handler: async () => undefined })
    const db = keel.tenant('acme')
    for (let i = 0; i < 5; i++) expect(await db.cached({ key: `k${i}` }, async () => i)).toBe(i)
    await expect(db.enqueue('hello', {})).rejects.toMatchObject({ code: 'KEEL_JOBS_UNAVAILABLE' })
    // close() while an enqueue is still in flight: both settle.
    const inFlight = db.enqueue('hello', {}).catch((error: unknown) => error)
    await keel.close()
    expect(await inFlight).toBeInstanceOf(KeelError)
  })
})
