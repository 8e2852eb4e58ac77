import type { EnqueueOptions, JobPort, JobStatus, OutboxRow, StagedJob } from '../client/job-port.js'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { buildEnqueueScripts, type EnqueueScripts } from './enqueue-script.js'
import type { FairScheduler } from './fair-scheduler.js'
import { JobConsumer, type JobHost, type StartWorkerOptions } from './job-consumer.js'
import type { ResolvedJobDefinition } from './job-definition.js'
import { JobProducer } from './job-producer.js'
import { JobReader } from './job-reader.js'
import type { JobWorker } from './job-worker.js'
import { JobsRedis } from './jobs-redis.js'
import { outboxInsert } from './outbox.js'
import { OutboxRelay, type TenantQueryable } from './outbox-relay.js'
import { QueueRegistry } from './queue-registry.js'

export type { EnqueueOptions, JobState, JobStatus } from '../client/job-port.js'
export { backoffDelay, type JobHost, type StartWorkerOptions } from './job-consumer.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

/**
 * keel's jobs on BullMQ, wired once: the queues (QueueRegistry), the enqueue path (JobProducer), reads by
 * id (JobReader), the consumer (workers), the outbox relay and sweep, and the Redis connections they
 * share, which close() closes. Split by concept like BullMQ's queue.ts / worker.ts (ADR 0025, 0030).
 * Sessions see it as a {@link JobPort}.
 */
export class JobRuntime implements JobPort {
  readonly #logger: Logger | undefined
  readonly #redis: JobsRedis
  readonly #queues: QueueRegistry
  readonly #producer: JobProducer
  readonly #reader: JobReader
  readonly #consumer: JobConsumer
  readonly #outbox: OutboxRelay

  /**
   * @param scripts 'bullmq' (default): keel's enqueue spliced into BullMQ's add scripts, one round trip;
   *   'fallback': the position script, then `Queue.add` (two round trips). keel falls back by itself, with
   *   a warning, when the installed BullMQ's scripts are not the ones it knows.
   */
  constructor(
    config: JobsConfig,
    definitions: ReadonlyMap<string, ResolvedJobDefinition>,
    telemetry: JobTelemetry,
    logger: Logger | undefined,
    scripts: 'bullmq' | 'fallback' = 'bullmq',
  ) {
    this.#logger = logger
    this.#redis = new JobsRedis(config.redis, logger)
    const built = scripts === 'bullmq' ? this.#buildScripts() : undefined
    this.#queues = new QueueRegistry(config, definitions, telemetry, logger, this.#redis, built)
    this.#producer = new JobProducer(config, definitions, telemetry, this.#queues)
    this.#reader = new JobReader(this.#queues)
    this.#consumer = new JobConsumer(
      config,
      definitions,
      telemetry,
      logger,
      this.#redis,
      this.#producer,
      this.#queues,
    )
    this.#outbox = new OutboxRelay(config, this.#producer, telemetry, logger)
  }

  #buildScripts(): EnqueueScripts | undefined {
    try {
      return buildEnqueueScripts()
    } catch (error) {
      this.#logger?.warn(
        { err: error },
        'keel jobs: BullMQ add scripts are not the ones keel knows; enqueue takes two round trips',
      )
      return undefined
    }
  }

  /** The fair positions of a job's queue (ADR 0013, 0025). */
  fairOf(jobName: string): FairScheduler {
    return this.#queues.scheduler(this.#queues.queueOfJob(jobName))
  }

  definition(name: unknown): ResolvedJobDefinition {
    return this.#producer.definition(name)
  }

  enqueue(
    tenantId: string,
    name: string,
    payload: unknown,
    options: EnqueueOptions | undefined,
    consistencyToken: string | undefined,
  ): Promise<{ jobId: string }> {
    return this.#producer.enqueue(tenantId, name, payload, options, consistencyToken)
  }

  stage(tenantId: string, name: string, payload: unknown, options: EnqueueOptions | undefined): StagedJob {
    const { data, opts, jobId } = this.#producer.check(tenantId, name, payload, options)
    const row: OutboxRow = {
      tenant_id: tenantId,
      id: jobId,
      name,
      payload: data,
      options: {
        ...(opts.delayMs === undefined ? {} : { delayMs: opts.delayMs }),
        ...(opts.priority === undefined ? {} : { priority: opts.priority }),
      },
    }
    return outboxInsert(row)
  }

  /** After COMMIT: the rows' jobs into their queues, then the rows deleted through `db` (their tenant's). */
  relay(
    db: TenantQueryable,
    rows: readonly OutboxRow[],
    consistencyToken: string | undefined,
  ): Promise<void> {
    return this.#outbox.relay(db, rows, consistencyToken)
  }

  /** One sweep of the outbox (workers run it every `jobs.outboxSweepMs`). */
  sweep(host: JobHost, ageMs: number): Promise<number> {
    return this.#outbox.sweep(host, ageMs)
  }

  status(tenantId: string, jobId: unknown): Promise<JobStatus | null> {
    return this.#reader.status(tenantId, jobId)
  }

  deadLetters(tenantId: string, limit?: number): Promise<JobStatus[]> {
    return this.#reader.deadLetters(tenantId, limit)
  }

  redrive(tenantId: string, jobId: unknown): Promise<boolean> {
    return this.#reader.redrive(tenantId, jobId)
  }

  startWorker(host: JobHost, options?: StartWorkerOptions): JobWorker {
    const worker = this.#consumer.start(host, options)
    this.#outbox.start(host)
    return worker
  }

  /** Stops taking jobs, waits (bounded) for the running ones, closes every connection keel opened. */
  async close(): Promise<void> {
    this.#outbox.stop()
    await this.#consumer.close()
    await this.#queues.close()
    await this.#redis.close()
  }
}
