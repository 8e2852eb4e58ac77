/**
 * A worker process of the jobs bench: forked by bench/dist/jobs.js, it runs either a plain BullMQ
 * `Worker` (`raw`) or `keel.startWorker` (`keel`) on the queue it is given, and reports to its parent
 * over IPC with timestamps taken here on CLOCK_MONOTONIC, which the parent shares:
 *
 * - `latency`: each handler's start (`job-start`) and each job's completion (`job-done`, from the
 *   worker's `completed` event, i.e. after BullMQ's moveToFinished round trip);
 * - `fairness`: nothing per job; once `concurrency` jobs started, `busy`; when the watched tenant's
 *   job starts, `watched-start` with the start times of every other job that started before it.
 *
 * Protocol: init → ready, start → started, stop → stopped (then it exits). Not meant to be run by hand.
 */
import type { Keel } from '@keel/core'
import { type Job, Worker } from 'bullmq'
import type { Redis } from 'ioredis'
import {
  createJobsKeel,
  defineBenchJob,
  type InitMessage,
  monoMs,
  type ParentMessage,
  sleep,
  type WorkerMessage,
  workerRedis,
} from './lib/jobs-common.js'

function send(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (process.send === undefined) resolve()
    else process.send(message, undefined, {}, () => resolve())
  })
}

let init: InitMessage | undefined
let keel: Keel | undefined
let worker: Worker | undefined
let connection: Redis | undefined

// Fairness bookkeeping: start times of the other tenants' jobs, in start order.
const othersStarts: number[] = []
let started = 0
let watchedSeen = false

/** Runs at the start of every handler: the only place where the two variants' handlers differ is the tenant's source. */
async function onStart(id: string, tenant: string): Promise<unknown> {
  const at = monoMs()
  const cfg = init!
  if (cfg.record === 'latency') {
    void send({ type: 'job-start', id, at })
  } else {
    started++
    if (tenant === cfg.watchTenant && !watchedSeen) {
      watchedSeen = true
      void send({ type: 'watched-start', at, othersBefore: othersStarts.slice(), started })
    } else {
      othersStarts.push(at)
    }
    if (started === cfg.concurrency) void send({ type: 'busy', started })
  }
  if (cfg.handlerMs > 0) await sleep(cfg.handlerMs)
  return { ok: true }
}

async function setUp(message: InitMessage): Promise<void> {
  init = message
  if (message.mode === 'keel') {
    keel = createJobsKeel({
      primaryUrl: message.primaryUrl,
      redisUrl: message.redisUrl,
      queue: message.queue,
      closeTimeoutMs: 5_000,
    })
    defineBenchJob(keel, (_payload, { db, job }) => onStart(String(job.id), db.tenantId))
  }
}

async function start(): Promise<void> {
  const cfg = init!
  if (cfg.mode === 'keel') {
    // keel runs a BullMQ worker per job name (ADR 0025); the bench defines one job, so one worker.
    worker = keel!.startWorker({ concurrency: cfg.concurrency }).workers[0]!
  } else {
    connection = workerRedis(cfg.redisUrl)
    // A plain BullMQ worker with its defaults, at the same concurrency.
    worker = new Worker(
      cfg.queue,
      (job: Job<{ tenant: string }>) => onStart(String(job.id), job.data.tenant),
      { connection, concurrency: cfg.concurrency },
    )
    worker.on('error', () => undefined)
  }
  if (cfg.record === 'latency') {
    worker.on('completed', (job: Job) => {
      void send({ type: 'job-done', id: String(job.id), at: monoMs() })
    })
  }
  await worker.waitUntilReady()
}

async function stop(): Promise<void> {
  if (keel !== undefined) await keel.close()
  else await worker?.close()
  await connection?.quit().catch(() => undefined)
}

process.on('message', (message: ParentMessage) => {
  const run = async (): Promise<void> => {
    switch (message.type) {
      case 'init':
        await setUp(message)
        await send({ type: 'ready' })
        break
      case 'start':
        await start()
        await send({ type: 'started' })
        break
      case 'stop':
        await stop()
        await send({ type: 'stopped' })
        process.exit(0)
    }
  }
  run().catch(async (error: unknown) => {
    await send({
      type: 'error',
      message: error instanceof Error ? (error.stack ?? error.message) : String(error),
    })
    process.exit(1)
  })
})

process.on('disconnect', () => process.exit(0))
