import { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import {
  createJobsKeel,
  defineBenchJob,
  JOB_NAME,
  payloadFor,
  producerRedis,
  RAW_JOB_OPTS,
} from './jobs-common.js'

/**
 * The enqueue variants of the jobs bench, shared by bench/src/jobs.ts (which times them) and
 * bench/src/jobs-profile.ts (which profiles them), so both run exactly the same code.
 */

export interface RunnerContext {
  redisUrl: string
  primaryUrl: string
}

/** Enqueues rotate over this many tenants (keel: `keel.tenant(id)`; raw: the id in the data). */
export const TENANTS = 50
export const tenantIds = Array.from({ length: TENANTS }, (_, i) => `t${String(i).padStart(2, '0')}`)

export interface Runner {
  enqueue(i: number): Promise<unknown>
  close(): Promise<void>
}

export interface EnqueueVariant {
  key: string
  label: string
  setup(ctx: RunnerContext, queue: string, round: number): Runner
}

// keel's position script before ADR 0019 (two round trips: this, then `Queue.add`), as keel's fallback
// still runs it (keel now keeps the two counters in one hash).
export const FAIR_PRIORITY = `
local pending = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local p = 1
if pending > 1 then p = math.min((tonumber(redis.call('GET', KEYS[2])) or 0) + 1, tonumber(ARGV[1])) end
redis.call('SET', KEYS[2], p, 'PX', ARGV[2])
return p`
export const BAND = 2 ** 17
/** keel's default priority 5 selects the fifth band of positions. */
export const DEFAULT_BAND_OFFSET = 4 * BAND

export function rawQueue(ctx: RunnerContext, name: string): { queue: Queue; close(): Promise<void> } {
  const connection = producerRedis(ctx.redisUrl)
  const queue = new Queue(name, { connection })
  return {
    queue,
    close: async () => {
      await queue.close().catch(() => undefined)
      await connection.quit().catch(() => undefined)
    },
  }
}

export function keelRunner(ctx: RunnerContext, name: string, idempotencyKey?: (i: number) => string): Runner {
  const keel = createJobsKeel({ primaryUrl: ctx.primaryUrl, redisUrl: ctx.redisUrl, queue: name })
  defineBenchJob(keel)
  return {
    enqueue: (i) =>
      keel
        .tenant(tenantIds[i % tenantIds.length]!)
        .enqueue(
          JOB_NAME,
          payloadFor(i),
          idempotencyKey === undefined ? undefined : { idempotencyKey: idempotencyKey(i) },
        ),
    close: () => keel.close(),
  }
}

export const ENQUEUE_VARIANTS: EnqueueVariant[] = [
  {
    key: 'raw',
    label: 'raw BullMQ `Queue.add` (FIFO)',
    setup: (ctx, name) => {
      const { queue, close } = rawQueue(ctx, name)
      return {
        enqueue: (i) =>
          queue.add(JOB_NAME, { tenant: tenantIds[i % tenantIds.length]!, ...payloadFor(i) }, RAW_JOB_OPTS),
        close,
      }
    },
  },
  {
    key: 'raw-priority',
    label: 'raw `Queue.add` with a priority',
    setup: (ctx, name) => {
      const { queue, close } = rawQueue(ctx, name)
      return {
        // The priorities keel would give: each tenant's next position in the default band.
        enqueue: (i) =>
          queue.add(
            JOB_NAME,
            { tenant: tenantIds[i % tenantIds.length]!, ...payloadFor(i) },
            { ...RAW_JOB_OPTS, priority: DEFAULT_BAND_OFFSET + Math.floor(i / tenantIds.length) + 1 },
          ),
        close,
      }
    },
  },
  {
    key: 'by-hand',
    label: "two round trips by hand (keel's fallback): position script, then `Queue.add` with it",
    setup: (ctx, name) => {
      const { queue, close } = rawQueue(ctx, name)
      const redis = producerRedis(ctx.redisUrl) as Redis & {
        benchFairPriority(pending: string, last: string, max: number, ttlMs: number): Promise<number>
      }
      redis.defineCommand('benchFairPriority', { numberOfKeys: 2, lua: FAIR_PRIORITY })
      return {
        enqueue: async (i) => {
          const tenant = tenantIds[i % tenantIds.length]!
          const position = await redis.benchFairPriority(
            `bull:${name}:bh:pending:{${tenant}}`,
            `bull:${name}:bh:last:{${tenant}}`,
            BAND - 1,
            86_400_000,
          )
          return queue.add(
            JOB_NAME,
            { tenant, ...payloadFor(i) },
            { ...RAW_JOB_OPTS, priority: DEFAULT_BAND_OFFSET + position },
          )
        },
        close: async () => {
          await close()
          await redis.quit().catch(() => undefined)
        },
      }
    },
  },
  {
    key: 'keel',
    label: 'keel `db.enqueue`',
    setup: (ctx, name) => keelRunner(ctx, name),
  },
  {
    key: 'keel-idem',
    label: 'keel `db.enqueue` with an idempotencyKey',
    setup: (ctx, name, round) => keelRunner(ctx, name, (i) => `invoice-${round}-${i}`),
  },
]

/** `n` enqueues with `inFlight` callers, each awaiting its previous enqueue before the next. */
export async function drive(
  runner: Runner,
  from: number,
  n: number,
  inFlight: number,
): Promise<{ elapsedMs: number; errors: number; firstError: string | undefined }> {
  let next = from
  const end = from + n
  let errors = 0
  let firstError: string | undefined
  const started = performance.now()
  const caller = async (): Promise<void> => {
    while (next < end) {
      const i = next++
      try {
        await runner.enqueue(i)
      } catch (error) {
        errors++
        firstError ??= errorText(error)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, caller))
  return { elapsedMs: performance.now() - started, errors, firstError }
}

export function errorText(error: unknown): string {
  return error instanceof Error
    ? `${(error as { code?: string }).code ?? error.name}: ${error.message}`
    : String(error)
}

/**
 * Removes a queue and all its jobs (BullMQ's obliterate, forced: nothing of it is running), then the
 * keys BullMQ does not know about under the queue's prefix (keel's positions and idempotency claims).
 */
export async function dropQueue(admin: Redis, name: string): Promise<void> {
  // keel keeps the bench job's jobs in a queue of its own (ADR 0025).
  for (const queueName of [name, `${name}~${JOB_NAME}`]) {
    const queue = new Queue(queueName, { connection: admin })
    try {
      await queue.obliterate({ force: true })
    } finally {
      await queue.close().catch(() => undefined)
    }
    await deleteKeys(admin, `bull:${queueName}:*`)
  }
}

export async function deleteKeys(admin: Redis, pattern: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await admin.unlink(...keys)
  } while (cursor !== '0')
  return deleted
}
