import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createKeel, type JobContext, type Keel } from '@keel/core'
import type { JobsOptions } from 'bullmq'
import { Redis } from 'ioredis'
import { z } from 'zod'
import { repoRoot } from './stack.js'

/**
 * What the jobs bench (bench/src/jobs.ts), its worker processes (bench/src/jobs-worker.ts) and its
 * profiler (bench/src/jobs-profile.ts) share: the job, its payload, the raw BullMQ options that match
 * keel's, keel's setup, the clock and the parent/worker protocol.
 */

export const JOB_NAME = 'invoice.email'

/** A small payload, validated by zod (keel checks it at enqueue and again before the handler). */
export const payloadSchema = z.object({
  invoiceId: z.string().min(1).max(64),
  amountCents: z.number().int().nonnegative(),
  locale: z.string().length(5),
})
export type Payload = z.infer<typeof payloadSchema>

export function payloadFor(i: number): Payload {
  return { invoiceId: `inv-${i}`, amountCents: 1_000 + (i % 997), locale: 'en-GB' }
}

/** keel's defaults: 3 retries (4 attempts), finished jobs kept 24 h, dead letters 7 d. */
export const RETRIES = 3
export const RETENTION_S = 86_400
export const DEAD_LETTER_RETENTION_S = 604_800

/**
 * What a typical BullMQ user passes to `Queue.add`, set like keel's jobs: the same attempts, an
 * exponential backoff from 1 s (keel's is exponential with jitter, a custom strategy), finished jobs
 * removed after the same ages. No priority: BullMQ's default FIFO.
 */
export const RAW_JOB_OPTS: JobsOptions = {
  attempts: RETRIES + 1,
  backoff: { type: 'exponential', delay: 1_000 },
  removeOnComplete: { age: RETENTION_S },
  removeOnFail: { age: DEAD_LETTER_RETENTION_S },
}

/** A producer connection made the way keel makes its own (fail fast: one retry per request). */
export function producerRedis(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 })
  redis.on('error', () => undefined)
  return redis
}

/** A worker connection made the way BullMQ requires it (blocking commands retry forever). */
export function workerRedis(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null })
  redis.on('error', () => undefined)
  return redis
}

export interface JobsKeelSetup {
  primaryUrl: string
  redisUrl: string
  queue: string
  closeTimeoutMs?: number
}

/** keel with its jobs on `queue`; Postgres is configured (required) but no handler here queries it. */
export function createJobsKeel(setup: JobsKeelSetup): Keel {
  return createKeel({
    postgres: { primary: { connectionString: setup.primaryUrl }, pool: { max: 1 } },
    jobs: {
      redis: { url: setup.redisUrl },
      queue: setup.queue,
      closeTimeoutMs: setup.closeTimeoutMs ?? 5_000,
    },
  })
}

/** Defines the bench's job on a keel instance (producers and workers alike must define it). */
export function defineBenchJob(
  keel: Keel,
  handler: (payload: Payload, context: JobContext) => Promise<unknown> = async () => ({ ok: true }),
): void {
  keel.defineJob(JOB_NAME, { schema: payloadSchema, handler, retries: RETRIES })
}

/**
 * Milliseconds on CLOCK_MONOTONIC (process.hrtime), which every process of this machine shares: a
 * timestamp taken in a worker process compares with one taken here, to the microsecond.
 */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

// ------------------------------------------------------------------------------- worker process protocol

export type WorkerMode = 'raw' | 'keel'

/** What a worker process records: each job's start and completion (latency), or start order (fairness). */
export type WorkerRecord = 'latency' | 'fairness'

export interface InitMessage {
  type: 'init'
  mode: WorkerMode
  record: WorkerRecord
  queue: string
  redisUrl: string
  primaryUrl: string
  concurrency: number
  /** How long each handler runs (a timer), 0 for none. */
  handlerMs: number
  /** Fairness: the tenant whose first start ends the measurement. */
  watchTenant?: string
}

export type ParentMessage = InitMessage | { type: 'start' } | { type: 'stop' }

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'started' }
  /** Latency: a handler started (monoMs). */
  | { type: 'job-start'; id: string; at: number }
  /** Latency: BullMQ marked the job completed (monoMs, after its moveToFinished round trip). */
  | { type: 'job-done'; id: string; at: number }
  /** Fairness: `concurrency` jobs have started, so the worker is busy. */
  | { type: 'busy'; started: number }
  /** Fairness: the watched tenant's job started, with the start times of every other job before it. */
  | { type: 'watched-start'; at: number; othersBefore: number[]; started: number }
  | { type: 'stopped' }
  | { type: 'error'; message: string }

// ------------------------------------------------------------------------------------------- versions

export function jobsLibraryVersions(): Record<string, string> {
  const read = (file: string): string => {
    try {
      return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
    } catch {
      return 'unknown'
    }
  }
  const core = join(repoRoot, 'packages/core')
  const bench = join(repoRoot, 'bench/node_modules')
  return {
    '@keel/core': read(join(core, 'package.json')),
    'bullmq (keel)': read(join(core, 'node_modules/bullmq/package.json')),
    'ioredis (keel)': read(join(core, 'node_modules/ioredis/package.json')),
    'zod (keel)': read(join(core, 'node_modules/zod/package.json')),
    bullmq: read(join(bench, 'bullmq/package.json')),
    ioredis: read(join(bench, 'ioredis/package.json')),
    zod: read(join(bench, 'zod/package.json')),
  }
}
