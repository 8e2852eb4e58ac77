import { Queue, type QueueOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { QueueKeys } from './bullmq-internals.js'
import type { EnqueueScripts } from './enqueue-script.js'
import { FairScheduler } from './fair-scheduler.js'
import { hashTagged, jobNameOf, queueOf } from './job-queues.js'
import type { JobsRedis } from './jobs-redis.js'
import { TenantJobs } from './tenant-jobs.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

/** How long the first jobs calls on a cluster wait for the producer's first connection. */
const FIRST_CONNECT_WAIT_MS = 2_000

/**
 * The producer's BullMQ queues (one per job name, ADR 0025), their fair schedulers and keel's per-tenant
 * keys, on one Redis connection opened at the first call: what the enqueue path (JobProducer) and the
 * reads by id (JobReader) share. BullMQ's `Queue` side, as keel opens it.
 */
export class QueueRegistry {
  readonly #config: JobsConfig
  readonly #definitions: ReadonlyMap<string, unknown>
  readonly #telemetry: JobTelemetry
  readonly #logger: Logger | undefined
  readonly #redis: JobsRedis
  /** keel's one-round-trip enqueue scripts; undefined: the two-round-trip fallback (ADR 0019). */
  readonly scripts: EnqueueScripts | undefined
  readonly #queues = new Map<string, Queue>()
  readonly #schedulers = new Map<string, FairScheduler>()
  #connection: Redis | undefined
  #tenantJobs: TenantJobs | undefined
  #everReady = false

  constructor(
    config: JobsConfig,
    definitions: ReadonlyMap<string, unknown>,
    telemetry: JobTelemetry,
    logger: Logger | undefined,
    redis: JobsRedis,
    scripts: EnqueueScripts | undefined,
  ) {
    this.#config = config
    this.#definitions = definitions
    this.#telemetry = telemetry
    this.#logger = logger
    this.#redis = redis
    this.scripts = scripts
  }

  get #client(): Redis {
    if (this.#connection === undefined) {
      this.#connection = this.#redis.open('producer')
      // Depth of every defined job's queue, summed per state, whenever the meter collects.
      this.#telemetry.observeDepth(async () => {
        const total: Record<string, number> = {}
        for (const name of this.#definitions.keys()) {
          const counts = await this.queue(this.queueOfJob(name)).getJobCounts(
            'waiting',
            'prioritized',
            'delayed',
            'active',
            'failed',
            'completed',
          )
          for (const [state, n] of Object.entries(counts)) total[state] = (total[state] ?? 0) + n
        }
        return total
      })
    }
    return this.#connection
  }

  /**
   * On a cluster (whose producer has no offline queue, see JobsRedis.open): waits, up to
   * FIRST_CONNECT_WAIT_MS, for the producer's first connection; after that, a cluster that is not ready
   * fails the call at once rather than holding it.
   */
  async ready(): Promise<void> {
    const client = this.#client
    if (!this.#redis.cluster || this.#everReady) return
    // Polled rather than listened for: BullMQ counts the listeners on the connection it shares (its
    // max-listeners accounting), and one more would print a MaxListenersExceededWarning.
    const deadline = Date.now() + FIRST_CONNECT_WAIT_MS
    while (client.status !== 'ready' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    if (client.status === 'ready') this.#everReady = true
  }

  /** The BullMQ queue of a job name. */
  queueOfJob(jobName: string): string {
    return queueOf(this.#config.queue, jobName, this.#redis.cluster)
  }

  /**
   * The BullMQ queue a job id lives in: its job's (the name is in the id), or the one-queue layout's for
   * an id made before ADR 0025. Undefined for an id keel never made.
   */
  queueOfId(jobId: string): string | undefined {
    const name = jobNameOf(jobId)
    if (name === undefined) return undefined
    return typeof name === 'string' ? this.queueOfJob(name) : this.#legacyQueue
  }

  /** keel's per-tenant keys shared by all job queues: running slots and dead letters. */
  get tenantJobs(): TenantJobs {
    this.#tenantJobs ??= new TenantJobs(this.#client, `${this.#config.prefix}:${this.#config.queue}:keel`)
    return this.#tenantJobs
  }

  /** The BullMQ queue of that name (a job's, or the one-queue layout's), opened once. */
  queue(name: string): Queue {
    let queue = this.#queues.get(name)
    if (queue === undefined) {
      queue = this.#open(name)
      this.#queues.set(name, queue)
    }
    return queue
  }

  #open(name: string): Queue {
    const queue = new Queue(name, this.#queueOptions())
    // Without a listener BullMQ prints the error on stderr; these mirror the connection's own errors,
    // which JobsRedis already logs.
    queue.on('error', (error: Error) =>
      this.#logger?.debug({ err: error, queue: name }, 'keel jobs: queue error'),
    )
    return queue
  }

  /**
   * A producer's queue fails its calls as its connection does (after one reconnect attempt) rather than
   * waiting for Redis: BullMQ otherwise waits, forever, for a connection it did not open to be ready, and
   * its version check would leave the queue broken after an outage.
   */
  #queueOptions(): QueueOptions {
    return {
      connection: this.#client,
      prefix: this.#config.prefix,
      skipWaitingForReady: true,
      skipVersionCheck: true,
    }
  }

  /** Fair positions in one BullMQ queue (ADR 0013): a job's, or the one-queue layout's. */
  scheduler(queueName: string): FairScheduler {
    let scheduler = this.#schedulers.get(queueName)
    if (scheduler === undefined) {
      scheduler = new FairScheduler(
        this.#client,
        `${this.#config.prefix}:${queueName}:keel`,
        new QueueKeys(this.#config.prefix).getKeys(queueName),
        this.#config.retentionMs,
        this.scripts,
      )
      this.#schedulers.set(queueName, scheduler)
    }
    return scheduler
  }

  /**
   * Runs `fn` on the queue of that name: kept open for a defined job's queue (or the one-queue layout's),
   * opened for the call only otherwise, so ids naming arbitrary jobs cannot pile up open queues.
   */
  async withQueue<R>(queueName: string, fn: (queue: Queue) => Promise<R>): Promise<R> {
    if (this.#queues.has(queueName) || this.#isKept(queueName)) return fn(this.queue(queueName))
    const queue = this.#open(queueName)
    try {
      return await fn(queue)
    } finally {
      await queue.close().catch(() => undefined)
    }
  }

  /** The one-queue layout's queue (before ADR 0025). */
  get #legacyQueue(): string {
    return hashTagged(this.#config.queue, this.#redis.cluster)
  }

  #isKept(queueName: string): boolean {
    if (queueName === this.#legacyQueue) return true
    for (const name of this.#definitions.keys()) if (this.queueOfJob(name) === queueName) return true
    return false
  }

  /** Closes the queues; JobsRedis closes the connection. */
  async close(): Promise<void> {
    await Promise.all([...this.#queues.values()].map((q) => q.close().catch(() => undefined)))
  }
}
