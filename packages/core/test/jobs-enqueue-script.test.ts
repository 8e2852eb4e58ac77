import { randomBytes } from 'node:crypto'
import { metrics, trace } from '@opentelemetry/api'
import { Job, Queue, QueueKeys, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { configSchema } from '../src/config/config-schema.js'
import { addDelayedJob, addPrioritizedJob } from '../src/jobs/bullmq-internals.js'
import {
  buildEnqueueScripts,
  COUNTER_LINE,
  DELAYED_KEYS,
  POSITION_MARKER,
  PRIORITIZED_KEYS,
} from '../src/jobs/enqueue-script.js'
import { resolveDefinition } from '../src/jobs/job-definition.js'
import { queueOf } from '../src/jobs/job-queues.js'
import { JobRuntime } from '../src/jobs/job-runtime.js'
import { JobTelemetry } from '../src/telemetry/job-telemetry.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// The guard of keel's one-round-trip enqueue (ADR 0019): keel runs BullMQ's own add scripts with its
// blocks spliced in, so it relies on their text, their keys and the job hash they write. Any change in
// BullMQ (an upgrade past the pinned 6.7.0) must fail here, loudly, before it reaches users.

let admin: Redis
const open: Array<{ close(): Promise<unknown> }> = []

beforeAll(() => {
  admin = new Redis(readStack().redis.url)
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()))
})
afterAll(async () => {
  await admin.quit()
})

function names() {
  return { queue: `guard${randomBytes(4).toString('hex')}` }
}

/** `KEYS[n] 'name'` lines of a BullMQ script's header, in order. */
function headerKeys(content: string): string[] {
  return [...content.matchAll(/KEYS\[(\d+)\]\s+'?([\w-]+)'?/g)]
    .filter((m) => content.indexOf(m[0]) < content.indexOf(']]'))
    .map((m) => m[2]!)
}

describe("BullMQ's add scripts, as keel splices them", () => {
  it('are the scripts keel was written against: version, keys, markers', async () => {
    const bullmq = (await import('bullmq/package.json', { with: { type: 'json' } })).default as {
      version: string
    }
    expect(bullmq.version).toBe('6.7.0')
    expect(addPrioritizedJob.keys).toBe(PRIORITIZED_KEYS.length)
    expect(addDelayedJob.keys).toBe(DELAYED_KEYS.length)
    // keel passes BullMQ's keys in the order of each script's header.
    expect(headerKeys(addPrioritizedJob.content)).toEqual([...PRIORITIZED_KEYS])
    expect(headerKeys(addDelayedJob.content)).toEqual([...DELAYED_KEYS])
    for (const script of [addPrioritizedJob, addDelayedJob]) {
      expect(script.content.split(POSITION_MARKER)).toHaveLength(2)
      // The job counter numbers only jobs without an id (`args[2] == ""`), and comes after `args`.
      expect(script.content.split(COUNTER_LINE)).toHaveLength(2)
      const counted = script.content.slice(script.content.indexOf(COUNTER_LINE))
      expect(counted).toMatch(/if args\[2\] == "" then\s+jobId = jobCounter \.\. ""/)
      expect(counted.match(/jobCounter/g)).toHaveLength(2)
      expect(script.content.indexOf('local args = cmsgpack.unpack(ARGV[1])')).toBeLessThan(
        script.content.indexOf(COUNTER_LINE),
      )
      // What keel's block relies on comes before it: the locals it uses, and BullMQ's duplicate-id check
      // (an existing id returns before a position is taken: idempotency keys).
      const before = script.content.slice(0, script.content.indexOf(POSITION_MARKER))
      expect(before).toContain('local rcall = redis.call')
      expect(before).toMatch(/local opts = cmsgpack\.unpack\(ARGV\[3\]\)/)
      expect(before).toMatch(
        /jobId = args\[2\]\s+jobIdKey = args\[1\] \.\. jobId\s+if rcall\("EXISTS", jobIdKey\) == 1 then\s+return handleDuplicatedJob\(/,
      )
    }
    const scripts = buildEnqueueScripts()
    expect(scripts.prioritized.lua).toContain("opts['priority'] = (opts['priority'] or 0) + p")
  })

  it('refuses scripts it does not know, so keel falls back to two round trips', () => {
    const changed = { ...addPrioritizedJob, content: addPrioritizedJob.content.replace(POSITION_MARKER, '') }
    expect(() => buildEnqueueScripts(changed)).toThrow(/addPrioritizedJob script changed/)
    expect(() => buildEnqueueScripts({ ...addPrioritizedJob, keys: 10 })).toThrow(/changed their keys/)
  })

  it('stores a job exactly as Queue.add does, and a real Worker runs it', async () => {
    const { queue: name } = names()
    const keel = testKeel({
      jobs: { redis: { url: readStack().redis.url }, queue: name, closeTimeoutMs: 2_000 },
    })
    open.push(keel)
    keel.defineJob('guard.job', {
      schema: z.object({ n: z.number() }),
      retries: 2,
      backoff: { delayMs: 50 },
      handler: async () => undefined,
    })
    const db = keel.tenant('guard-tenant')
    const enqueuedFrom = Date.now()
    const { jobId } = await db.enqueue('guard.job', { n: 1 }, { priority: 3 })
    const enqueuedTo = Date.now()
    const { jobId: laterId } = await db.enqueue('guard.job', { n: 2 }, { delayMs: 60_000 })

    // Each job has its own queue (ADR 0025).
    const queue = new Queue(queueOf(name, 'guard.job'), { connection: admin })
    open.push(queue)
    const keelJob = (await queue.getJob(jobId))!
    // The same job through BullMQ's own Queue.add, with the options keel gives it.
    const rawJob = await queue.add('guard.job', keelJob.data, {
      jobId: `raw-${jobId}`,
      attempts: 3,
      backoff: { type: 'keel' },
      priority: keelJob.priority,
      removeOnComplete: { age: 86_400 },
      removeOnFail: { age: 604_800 },
    })
    const keys = new QueueKeys('bull').getKeys(queueOf(name, 'guard.job'))
    const keelHash = await admin.hgetall(`${keys['']}${jobId}`)
    const rawHash = await admin.hgetall(`${keys['']}raw-${jobId}`)
    expect(Object.keys(keelHash).sort()).toEqual(Object.keys(rawHash).sort())
    for (const field of Object.keys(rawHash)) {
      if (field === 'timestamp') continue
      if (field === 'opts') {
        expect(JSON.parse(keelHash.opts!)).toEqual({ ...JSON.parse(rawHash.opts!), jobId })
      } else expect([field, keelHash[field]]).toEqual([field, rawHash[field]])
    }
    // What BullMQ reads back: every field keel relies on.
    const fetched = (await Job.fromId(queue, jobId))!
    expect(fetched.data).toMatchObject({ v: 1, t: 'guard-tenant', p: { n: 1 } })
    expect(fetched.name).toBe('guard.job')
    expect(fetched.opts).toMatchObject({
      attempts: 3,
      backoff: { type: 'keel' },
      priority: 2 * 2 ** 17 + 1, // band 3, the tenant's first position
      removeOnComplete: { age: 86_400 },
      removeOnFail: { age: 604_800 },
      jobId,
    })
    expect(fetched.priority).toBe(2 * 2 ** 17 + 1)
    expect(fetched.attemptsMade).toBe(0)
    // Stamped by keel's client as BullMQ's is (not a duration: the enqueue happened between the two reads).
    expect(fetched.timestamp).toBeGreaterThanOrEqual(enqueuedFrom)
    expect(fetched.timestamp).toBeLessThanOrEqual(enqueuedTo)
    expect(await queue.getJobState(jobId)).toBe('prioritized')
    expect(await admin.zscore(keys.prioritized!, jobId)).not.toBeNull()

    // The delayed job: in BullMQ's delayed set, its priority kept for when it is promoted.
    const later = (await queue.getJob(laterId))!
    expect(await queue.getJobState(laterId)).toBe('delayed')
    expect(later.opts).toMatchObject({ delay: 60_000, priority: 4 * 2 ** 17 + 2, attempts: 3 })
    expect(later.delay).toBe(60_000)
    await later.remove()

    // A plain BullMQ Worker takes keel's job off the prioritized set and completes it; the raw one too.
    const seen: string[] = []
    const worker = new Worker(
      queueOf(name, 'guard.job'),
      async (job) => {
        seen.push(String(job.id))
        return job.data.p
      },
      { connection: new Redis(readStack().redis.url, { maxRetriesPerRequest: null }) },
    )
    open.push(worker)
    await waitFor('both jobs to complete', async () => (await queue.getJobState(rawJob.id!)) === 'completed')
    await waitFor('keel job to complete', async () => (await queue.getJobState(jobId)) === 'completed')
    expect(seen.sort()).toEqual([jobId, `raw-${jobId}`].sort())
    expect((await queue.getJob(jobId))!.returnvalue).toEqual({ n: 1 })
  })

  it("an idempotency key is one job and one position: BullMQ's duplicate-id check, in the same script", async () => {
    const { queue: name } = names()
    const keel = testKeel({
      jobs: { redis: { url: readStack().redis.url }, queue: name, closeTimeoutMs: 2_000 },
    })
    open.push(keel)
    keel.defineJob('guard.idem', { schema: z.object({}), handler: async () => undefined })
    const db = keel.tenant('idem-tenant')
    const before = Number((await admin.info('commandstats')).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0)
    const ids = await Promise.all(
      Array.from({ length: 10 }, () => db.enqueue('guard.idem', {}, { idempotencyKey: 'once' })),
    )
    const after = Number((await admin.info('commandstats')).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0)
    expect(new Set(ids.map((x) => x.jobId)).size).toBe(1)
    // One script per enqueue (EVAL when the script was not loaded yet counts apart), nothing else.
    expect(after - before).toBeLessThanOrEqual(10)
    const queue = new Queue(queueOf(name, 'guard.idem'), { connection: admin })
    open.push(queue)
    expect(await queue.getJobCounts('prioritized')).toEqual({ prioritized: 1 })
    // One position taken: the tenant's one pending job; no key besides BullMQ's and the tenant's hash.
    const keelKeys = `bull:${queueOf(name, 'guard.idem')}:keel`
    expect(await admin.hgetall(`${keelKeys}:fair:{idem-tenant}`)).toEqual({ last: '1' })
    expect(await admin.keys(`${keelKeys}:*`)).toEqual([`${keelKeys}:fair:{idem-tenant}`])
    expect(await admin.keys(`bull:${name}:*`)).toEqual([])
  })
})

describe('the two-round-trip fallback', () => {
  /** A bare runtime on `queue`, taking the one-trip path or the fallback. */
  function runtime(queue: string, scripts: 'bullmq' | 'fallback'): JobRuntime {
    const { jobs } = configSchema.parse({
      postgres: { primary: { connectionString: readStack().primary.url } },
      jobs: { redis: { url: readStack().redis.url }, queue },
    })
    const definitions = new Map([
      ['fb.job', resolveDefinition('fb.job', { schema: z.object({}), handler: async () => undefined })],
    ])
    const telemetry = new JobTelemetry(trace.getTracer('t'), metrics.getMeter('t'), queue)
    const jobsRuntime = new JobRuntime(jobs!, definitions, telemetry, undefined, scripts)
    open.push(jobsRuntime)
    return jobsRuntime
  }

  it('claims and positions like the one-trip path, on the same keys, so both can serve one queue', async () => {
    const { queue: name } = names()
    const fallback = runtime(name, 'fallback')
    const oneTrip = runtime(name, 'bullmq')
    const first = await Promise.all(
      Array.from({ length: 5 }, () =>
        fallback.enqueue('fb-tenant', 'fb.job', {}, { idempotencyKey: 'k' }, undefined),
      ),
    )
    expect(new Set(first.map((x) => x.jobId)).size).toBe(1)
    // The one-trip path sees the fallback's claim, and continues the tenant's positions.
    expect(await oneTrip.enqueue('fb-tenant', 'fb.job', {}, { idempotencyKey: 'k' }, undefined)).toEqual(
      first[0],
    )
    const second = await oneTrip.enqueue('fb-tenant', 'fb.job', {}, undefined, undefined)
    const third = await fallback.enqueue('fb-tenant', 'fb.job', {}, { priority: 1 }, undefined)
    const queue = new Queue(queueOf(name, 'fb.job'), { connection: admin })
    open.push(queue)
    const priorities = await Promise.all(
      [first[0]!.jobId, second.jobId, third.jobId].map(async (id) => (await queue.getJob(id))!.priority),
    )
    expect(priorities).toEqual([4 * 2 ** 17 + 1, 4 * 2 ** 17 + 2, 3])
    expect(await admin.hgetall(`bull:${queueOf(name, 'fb.job')}:keel:fair:{fb-tenant}`)).toEqual({
      last: '3',
    })
  })

  it('restarts a tenant at position 1 once all its jobs are done, not before', async () => {
    const { queue: name } = names()
    const jobs = runtime(name, 'bullmq')
    const queue = new Queue(queueOf(name, 'fb.job'), { connection: admin })
    open.push(queue)
    const position = async () => {
      const { jobId } = await jobs.enqueue('pos-tenant', 'fb.job', {}, undefined, undefined)
      return (await queue.getJob(jobId))!.priority - 4 * 2 ** 17
    }
    expect([await position(), await position()]).toEqual([1, 2])
    await jobs.fairOf('fb.job').done('pos-tenant')
    // One of two done: one still pending, so the next job queues behind it.
    expect(await position()).toBe(3)
    await jobs.fairOf('fb.job').done('pos-tenant')
    await jobs.fairOf('fb.job').done('pos-tenant')
    expect(await admin.exists(`bull:${queueOf(name, 'fb.job')}:keel:fair:{pos-tenant}`)).toBe(0)
    expect(await position()).toBe(1)
    // A re-driven job (it keeps its own priority) counts as pending again: with the next job, two are
    // pending, and the tenant restarts only when both are done.
    await jobs.fairOf('fb.job').done('pos-tenant')
    await jobs.fairOf('fb.job').repend('pos-tenant')
    expect(await position()).toBe(1)
    expect(await admin.hgetall(`bull:${queueOf(name, 'fb.job')}:keel:fair:{pos-tenant}`)).toEqual({
      last: '1',
      done: '-1',
    })
    await jobs.fairOf('fb.job').done('pos-tenant')
    expect(await position()).toBe(2)
  })
})
