import type { Cluster, Redis } from 'ioredis'
import { z } from 'zod'

// The cache and jobs branches of createKeel's config (both on Redis).

function isRedisUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'redis:' || url.protocol === 'rediss:'
  } catch {
    return false
  }
}

const redisUrl = z.string().refine(isRedisUrl, { message: 'must be a redis:// or rediss:// URL' })

/** An ioredis `Redis` or `Cluster` the app made (duck-typed: the app's ioredis may be another copy). */
function isIoredisClient(value: unknown): value is Redis | Cluster {
  const v = value as { duplicate?: unknown; sendCommand?: unknown; status?: unknown } | null
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.duplicate === 'function' &&
    typeof v.sendCommand === 'function' &&
    typeof v.status === 'string'
  )
}

/**
 * The four ways to name a Redis (ADR 0039), each a strict object so that a config mixing two (a `url`
 * and a `cluster`) is rejected rather than half-used. `extra` adds the same options to each form.
 */
function redisTopologySchema<E extends z.core.$ZodLooseShape>(extra: E) {
  return z.union([
    z.strictObject({
      /** `redis://[:password@]host:port[/db]`. The password never appears in errors or logs. */
      url: redisUrl,
      ...extra,
    }),
    z.strictObject({
      /** Redis Cluster: some of its nodes' URLs (the rest are discovered); credentials from the first. */
      cluster: z.array(redisUrl).min(1).max(64),
      ...extra,
    }),
    z.strictObject({
      /** Sentinel: the Sentinels' URLs (credentials in a URL are the Sentinels' own). */
      sentinels: z.array(redisUrl).min(1).max(64),
      /** The master's name, as in `sentinel monitor <name> ...`. */
      name: z.string().min(1).max(256),
      /** The password of the master and its replicas (not the Sentinels'). */
      password: z.string().min(1).optional(),
      ...extra,
    }),
    z.strictObject({
      /**
       * An ioredis `Redis` or `Cluster` the app already has: keel opens its own connections as
       * `client.duplicate()` and closes those; the app's instance is the app's to close.
       */
      client: z.custom<Redis | Cluster>(isIoredisClient, {
        message: 'must be an ioredis Redis or Cluster instance',
      }),
      ...extra,
    }),
  ])
}

export const cacheSchema = z.strictObject({
  /**
   * Redis for the shared tier, stampede locks and cross-process invalidation: `{ url }`, `{ cluster }`,
   * `{ sentinels, name }` or `{ client }` (ADR 0039). Without it: L1 only.
   */
  redis: redisTopologySchema({
    /** Per-command timeout: a slow Redis counts as a failing one. @default 100 */
    commandTimeoutMs: z.number().int().min(1).max(60_000).default(100),
  }).optional(),
  l1: z
    .strictObject({
      /** Entries kept in process. @default 10000 */
      maxEntries: z.number().int().min(1).max(10_000_000).default(10_000),
      /** Approximate bytes kept in process (serialized size). @default 67108864 (64 MiB) */
      maxBytes: z
        .number()
        .int()
        .min(1_024)
        .default(64 * 1_024 * 1_024),
      /** Deep-freeze cached objects and arrays so no caller can mutate what others share. @default true */
      freeze: z.boolean().default(true),
    })
    .prefault({}),
  /** How long a value is fresh. @default 60000 */
  ttlMs: z.number().int().min(1).default(60_000),
  /** After ttlMs, how long a value is served while one caller refreshes it. @default 0 */
  staleMs: z.number().int().min(0).default(0),
  /** After that, how long a value may still be served when the loader fails (fail-safe). @default 0 */
  graceMs: z.number().int().min(0).default(0),
  /** With a stale value at hand, return it if the loader takes longer than this (0 = wait). @default 0 */
  softTimeoutMs: z.number().int().min(0).default(0),
  /** TTLs vary by up to this fraction so entries written together do not expire together. @default 0.1 */
  jitter: z.number().min(0).max(0.5).default(0.1),
  /** XFetch beta: how eagerly hot keys refresh before expiry (0 = never early). @default 1 */
  earlyRefreshBeta: z.number().min(0).max(10).default(1),
  /** Prefix of every Redis key and channel. @default 'keel' */
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,32}$/)
    .default('keel'),
  /** How long one process may hold a key's loader lock; a crashed loader blocks others no longer. @default 5000 */
  lockTtlMs: z.number().int().min(100).max(600_000).default(5_000),
  /** How long invalidate() waits for the other processes to confirm they dropped their copies. @default 500 */
  invalidationAckTimeoutMs: z.number().int().min(0).max(60_000).default(500),
  /** Consecutive Redis failures that open the circuit breaker. @default 5 */
  breakerThreshold: z.number().int().min(1).default(5),
  /** How long the breaker stays open before one command probes Redis again. @default 2000 */
  breakerResetMs: z.number().int().min(10).default(2_000),
})

export const jobsSchema = z.strictObject({
  /** The Redis BullMQ keeps its queues in: `{ url }`, `{ cluster }`, `{ sentinels, name }` or `{ client }` (ADR 0039). */
  redis: redisTopologySchema({}),
  /** The name keel's BullMQ queues start with: each job name has its own, `<queue>~<job name>` (ADR 0025). @default 'keel-jobs' */
  queue: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/)
    .default('keel-jobs'),
  /** BullMQ key prefix in Redis. @default 'bull' */
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,32}$/)
    .default('bull'),
  /** How long finished jobs (and so their idempotency keys) are kept. @default 86400000 (24 h) */
  retentionMs: z.number().int().min(1_000).default(86_400_000),
  /** How long jobs that exhausted their retries are kept (dead letters). @default 604800000 (7 d) */
  deadLetterRetentionMs: z.number().int().min(1_000).default(604_800_000),
  /** How long keel.close() waits for running jobs before abandoning them (they run again elsewhere). @default 30000 */
  closeTimeoutMs: z.number().int().min(0).default(30_000),
  /** A worker that stops renewing a job's lock for this long is presumed dead; the job runs elsewhere. @default 30000 */
  lockDurationMs: z.number().int().min(1_000).default(30_000),
  /** Jobs of one tenant running at once across all workers (0 = no cap). @default 0 */
  tenantConcurrency: z.number().int().min(0).default(0),
  /** tx.enqueue() writes to keel_job_outbox (create it with applyJobOutbox) and workers sweep it. @default false */
  outbox: z.boolean().default(false),
  /** How often workers relay outbox rows left behind by a crash, and how old a row must be. @default 2000 */
  outboxSweepMs: z.number().int().min(100).default(2_000),
})
