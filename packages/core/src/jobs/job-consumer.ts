import { context } from '@opentelemetry/api'
import { DelayedError, type Job, type MinimalJob, Worker } from 'bullmq'
import type { TenantClient } from '../client/tenant-client.js'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { checkPayload, type ResolvedJobDefinition } from './job-definition.js'
import { isEnvelope, type JobEnvelope } from './job-envelope.js'
import type { JobProducer } from './job-producer.js'
import { queueOf } from './job-queues.js'
import { JobWorker } from './job-worker.js'
import { isConnectionError, type JobsRedis } from './jobs-redis.js'
import type { QueueRegistry } from './queue-registry.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

/** Resolves a tenant's db and runs code as that tenant: supplied by keel, so jobs need no keel import. */
export interface JobHost {
  runAs<R>(
    tenantId: string,
    consistencyToken: string | undefined,
    fn: (db: TenantClient) => Promise<R>,
  ): Promise<R>
  /**
   * Runs a tenant-less statement on each primary, for the outbox sweep's list of tenants with stale
   * rows: the one primary, or in database mode every tenant database this process has served.
   */
  queryPrimaries<T>(text: string, values: readonly unknown[]): Promise<T[]>
}

export interface StartWorkerOptions {
  /** Which defined jobs this worker runs. @default all defined */
  jobs?: readonly string[]
  /** Jobs of each job name run at once by this worker (one BullMQ worker per job name). @default 10 */
  concurrency?: number
}

/**
 * The consumer side of keel's jobs (BullMQ's `Worker` side): a BullMQ Worker per job name, each on its
 * job's own queue (ADR 0025), so a worker is only ever handed jobs it runs; each job runs as its tenant
 * with the producer's consistency token and trace.
 */
export class JobConsumer {
  readonly #config: JobsConfig
  readonly #definitions: ReadonlyMap<string, ResolvedJobDefinition>
  readonly #telemetry: JobTelemetry
  readonly #logger: Logger | undefined
  readonly #redis: JobsRedis
  /** Looks up definitions (KEEL_JOB_UNKNOWN for a name never defined). */
  readonly #producer: Pick<JobProducer, 'definition'>
  readonly #queues: QueueRegistry
  readonly #started: JobWorker[] = []

  constructor(
    config: JobsConfig,
    definitions: ReadonlyMap<string, ResolvedJobDefinition>,
    telemetry: JobTelemetry,
    logger: Logger | undefined,
    redis: JobsRedis,
    producer: Pick<JobProducer, 'definition'>,
    queues: QueueRegistry,
  ) {
    this.#config = config
    this.#definitions = definitions
    this.#telemetry = telemetry
    this.#logger = logger
    this.#redis = redis
    this.#producer = producer
    this.#queues = queues
  }

  start(host: JobHost, options: StartWorkerOptions = {}): JobWorker {
    const names = [...new Set(options.jobs ?? this.#definitions.keys())]
    const definitions = names.map((name) => this.#producer.definition(name))
    const concurrency = options.concurrency ?? 10
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1_000) {
      throw new KeelError('KEEL_JOB_INVALID', 'startWorker concurrency must be an integer from 1 to 1000', {
        details: { field: 'concurrency' },
      })
    }
    if (definitions.length === 0) {
      throw new KeelError('KEEL_JOB_INVALID', 'startWorker needs at least one defined job', {
        details: { field: 'jobs' },
      })
    }
    // One connection for this start's workers; BullMQ adds a blocking connection per worker.
    const connection = this.#redis.open('worker')
    const worker = new JobWorker(
      definitions.map((definition) => this.#workerFor(host, definition, connection, concurrency)),
    )
    this.#started.push(worker)
    return worker
  }

  #workerFor(
    host: JobHost,
    definition: ResolvedJobDefinition,
    connection: ReturnType<JobsRedis['open']>,
    concurrency: number,
  ): Worker {
    const queueName = queueOf(this.#config.queue, definition.name, this.#redis.cluster)
    const worker = new Worker(queueName, (job: Job, token?: string) => this.#process(host, job, token), {
      connection,
      prefix: this.#config.prefix,
      concurrency,
      lockDuration: this.#config.lockDurationMs,
      stalledInterval: Math.max(1_000, Math.floor(this.#config.lockDurationMs / 2)),
      maxStalledCount: 3,
      // BullMQ waits this long before fetching again after a Redis error, in a timer its close() does not
      // cancel: 15 s by default kept a closed process alive that long (issue #10, item 7).
      runRetryDelay: 1_000,
      settings: {
        backoffStrategy: (attemptsMade: number, _type?: string, _error?: Error, job?: MinimalJob) => {
          const d = job === undefined ? undefined : this.#definitions.get(job.name)
          return backoffDelay(attemptsMade, d?.backoffDelayMs ?? 1_000, d?.backoffMaxMs ?? 300_000)
        },
      },
    })
    worker.on('error', (error) => {
      // Redis outages are logged once by JobsRedis; the worker repeats them at each retry.
      if (isConnectionError(error))
        this.#logger?.debug({ err: error, queue: queueName }, 'keel jobs: worker error')
      else this.#logger?.warn({ err: error, queue: queueName }, 'keel jobs: worker error')
    })
    // A tenant's pending count (its fair-share position) drops when a job is done for good.
    const fair = this.#queues.scheduler(queueName)
    const settled = (job: Job | undefined) => {
      if (job !== undefined && isEnvelope(job.data)) fair.done(job.data.t).catch(() => undefined)
    }
    worker.on('completed', settled)
    worker.on('failed', (job) => {
      if (job === undefined || job.attemptsMade < (job.opts.attempts ?? 1)) return
      settled(job)
      if (isEnvelope(job.data)) {
        const retention = this.#config.deadLetterRetentionMs
        this.#queues.tenantJobs
          .deadLetter(job.data.t, String(job.id), Date.now(), retention)
          .catch((error: unknown) => {
            this.#logger?.warn({ err: error, jobId: job.id }, 'keel jobs: could not index a dead letter')
          })
        this.#logger?.warn(
          {
            jobId: job.id,
            job: job.name,
            tenantId: job.data.t,
            error: job.failedReason,
            signal: 'job_dead_letter',
          },
          'keel jobs: job exhausted its retries',
        )
      }
    })
    return worker
  }

  async #process(host: JobHost, job: Job, token?: string): Promise<unknown> {
    // A job's queue holds only its name's jobs (keel's enqueue puts it there); anything else was added
    // by hand.
    const definition = this.#definitions.get(job.name)
    if (definition === undefined) {
      throw new KeelError('KEEL_JOB_UNKNOWN', `this worker does not run job ${JSON.stringify(job.name)}`)
    }
    if (!isEnvelope(job.data))
      throw new KeelError('KEEL_JOB_PAYLOAD_INVALID', 'the job data is not a keel job')
    const envelope = job.data
    const cap = this.#config.tenantConcurrency
    const slot =
      cap > 0
        ? await this.#queues.tenantJobs.acquire(envelope.t, String(job.id), cap, this.#config.lockDurationMs)
        : undefined
    if (slot === false) {
      // The tenant already runs its share: put the job back for a moment, without using an attempt.
      await job.moveToDelayed(Date.now() + 100 + Math.floor(Math.random() * 100), token)
      throw new DelayedError()
    }
    try {
      return await this.#run(job, definition, envelope, host)
    } finally {
      slot?.release()
    }
  }

  async #run(
    job: Job,
    definition: ResolvedJobDefinition,
    envelope: JobEnvelope,
    host: JobHost,
  ): Promise<unknown> {
    const { span, context: traceContext } = this.#telemetry.startProcess(
      job.name,
      envelope.t,
      String(job.id),
      job.attemptsMade + 1,
      envelope.tc,
    )
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const started = Date.now()
    this.#telemetry.attemptStarted(job.name, started - job.timestamp - (job.opts.delay ?? 0))
    try {
      const payload = checkPayload(definition, envelope.p)
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const error = new KeelError(
            'KEEL_JOB_TIMEOUT',
            `job ${job.name} attempt exceeded ${definition.timeoutMs} ms`,
            {
              details: { job: job.name, jobId: job.id, timeoutMs: definition.timeoutMs },
            },
          )
          controller.abort(error)
          reject(error)
        }, definition.timeoutMs)
      })
      const run = context.with(traceContext, () =>
        host.runAs(envelope.t, envelope.c, (db) =>
          definition.handler(payload, { db, job, signal: controller.signal }),
        ),
      )
      const result = await Promise.race([run, timeout])
      this.#telemetry.end(span)
      this.#telemetry.attemptEnded(job.name, Date.now() - started, false, false)
      return result
    } catch (error) {
      this.#telemetry.end(span, error)
      this.#telemetry.attemptEnded(
        job.name,
        Date.now() - started,
        true,
        job.attemptsMade + 1 >= (job.opts.attempts ?? 1),
      )
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  /** Stops taking jobs, waits (bounded) for the running ones. */
  async close(): Promise<void> {
    const graceful = Promise.all(this.#started.map((w) => w.close()))
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#config.closeTimeoutMs)
    })
    const outcome = await Promise.race([graceful.then(() => 'done' as const), bound])
    clearTimeout(timer)
    if (outcome === 'timeout') {
      // Abandoned jobs keep their lock until it expires; then another worker picks them up. A worker
      // whose Redis is gone never finishes closing: its sockets are cut instead of waited for
      this.#logger?.warn(
        { timeoutMs: this.#config.closeTimeoutMs },
        'keel jobs: close timed out; running jobs abandoned',
      )
      // (JobsRedis closes them, after this.)
    }
  }
}

/** Exponential backoff with equal jitter: half the exponential delay, plus a random half. */
export function backoffDelay(attemptsMade: number, baseMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.max(0, attemptsMade - 1))
  return Math.round(exponential / 2 + Math.random() * (exponential / 2))
}
