// One piece (~470 lines): the producer side of BullMQ as keel uses it: queues per job name, the
// one-round-trip enqueue and its fallback, and the reads of a job by id (status, dead letters, redrive),
// which need the same queue-of-id mapping. The consumer, outbox relay and Redis connections are apart.
import { Queue, type QueueOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { QueueKeys } from './bullmq-internals.js'
import type { EnqueueScripts } from './enqueue-script.js'
import { bandOffset, FairScheduler } from './fair-scheduler.js'
import { checkPayload, type ResolvedJobDefinition } from './job-definition.js'
import { isEnvelope, type JobEnvelope } from './job-envelope.js'
import { jobIdFor, jobNameOf, queueOf } from './job-queues.js'
import { type JobsRedis, jobsUnavailable } from './jobs-redis.js'
import type { OutboxRow } from './outbox.js'
import { TenantJobs } from './tenant-jobs.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

export interface EnqueueOptions {
  /** The same key (per tenant and job name) gives the same job, also after it finished, within retentionMs. */
  idempotencyKey?: string
  /** Run no earlier than this many milliseconds from now. */
  delayMs?: number
  /** 1 (first) to 10 (last) among this tenant's jobs. @default 5 */
  priority?: number
}

export type JobState = 'waiting' | 'delayed' | 'active' | 'completed' | 'failed' | 'unknown'

export interface JobStatus {
  id: string
  name: string
  state: JobState
  progress: unknown
  /** Attempts made so far. */
  attempts: number
  result: unknown
  error: string | null
  createdAt: number
  finishedAt: number | null
}

/** One job to add: who, what, its id (unique: from an idempotency key or an outbox row) and options. */
interface AddRequest {
  readonly tenantId: string
  readonly name: string
  readonly jobId: string
  readonly unique: boolean
  readonly definition: ResolvedJobDefinition
  readonly opts: EnqueueOptions
}

const STATES: Record<string, JobState> = {
  waiting: 'waiting',
  'waiting-children': 'waiting',
  prioritized: 'waiting',
  delayed: 'delayed',
  active: 'active',
  completed: 'completed',
  failed: 'failed',
}

/** Not a valid token on purpose: a session resumed from it reads the primary. */
export const SWEPT_TOKEN = 'outbox-swept'

/**
 * The producer side of keel's jobs (BullMQ's `Queue` side): validated enqueues into each job's own queue
 * (ADR 0025), one script each (ADR 0019), and a tenant's view of its jobs: status, dead letters, redrive.
 * One Redis connection, opened at the first call, shared by every job's queue and scheduler.
 */
export class JobProducer {
  readonly #config: JobsConfig
  readonly #definitions: ReadonlyMap<string, ResolvedJobDefinition>
  readonly #telemetry: JobTelemetry
  readonly #logger: Logger | undefined
  readonly #redis: JobsRedis
  /** keel's one-round-trip enqueue scripts; undefined: the two-round-trip fallback (ADR 0019). */
  readonly #scripts: EnqueueScripts | undefined
  readonly #queues = new Map<string, Queue>()
  readonly #schedulers = new Map<string, FairScheduler>()
  readonly #byJob = new Map<string, FairScheduler>()
  /** Packed BullMQ options per job name and band, for jobs without a delay. */
  readonly #packedOpts = new Map<string, Buffer>()
  #connection: Redis | undefined
  #tenantJobs: TenantJobs | undefined

  constructor(
    config: JobsConfig,
    definitions: ReadonlyMap<string, ResolvedJobDefinition>,
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
    this.#scripts = scripts
  }

  get #client(): Redis {
    if (this.#connection === undefined) {
      this.#connection = this.#redis.open('producer')
      // Depth of every defined job's queue, summed per state, whenever the meter collects.
      this.#telemetry.observeDepth(async () => {
        const total: Record<string, number> = {}
        for (const name of this.#definitions.keys()) {
          const counts = await this.queue(queueOf(this.#config.queue, name)).getJobCounts(
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

  /** keel's per-tenant keys shared by all job queues: running slots and dead letters. */
  get tenantJobs(): TenantJobs {
    this.#tenantJobs ??= new TenantJobs(this.#client, `${this.#config.prefix}:${this.#config.queue}:keel`)
    return this.#tenantJobs
  }

  /** The BullMQ queue of that name (a job's, or the one-queue layout's), opened once. */
  queue(name: string): Queue {
    let queue = this.#queues.get(name)
    if (queue === undefined) {
      queue = new Queue(name, this.#queueOptions())
      // Without a listener BullMQ prints the error on stderr; these mirror the connection's own errors,
      // which JobsRedis already logs.
      queue.on('error', (error: Error) =>
        this.#logger?.debug({ err: error, queue: name }, 'keel jobs: queue error'),
      )
      this.#queues.set(name, queue)
    }
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
        this.#scripts,
      )
      this.#schedulers.set(queueName, scheduler)
    }
    return scheduler
  }

  /** The scheduler of a job's queue, by job name (the enqueue's hot path: no queue name to build). */
  #schedulerOfJob(jobName: string): FairScheduler {
    let scheduler = this.#byJob.get(jobName)
    if (scheduler === undefined) {
      scheduler = this.scheduler(queueOf(this.#config.queue, jobName))
      this.#byJob.set(jobName, scheduler)
    }
    return scheduler
  }

  definedNames(): IterableIterator<string> {
    return this.#definitions.keys()
  }

  definition(name: unknown): ResolvedJobDefinition {
    const definition = typeof name === 'string' ? this.#definitions.get(name) : undefined
    if (definition === undefined) {
      throw new KeelError(
        'KEEL_UNKNOWN_JOB',
        `no job ${JSON.stringify(name)} was defined with keel.defineJob()`,
        {
          details: { name },
        },
      )
    }
    return definition
  }

  async enqueue(
    tenantId: string,
    name: string,
    payload: unknown,
    options: EnqueueOptions | undefined,
    consistencyToken: string | undefined,
  ): Promise<{ jobId: string }> {
    const definition = this.definition(name)
    const data = checkPayload(definition, payload)
    const opts = checkEnqueueOptions(options)
    const jobId = jobIdFor(tenantId, name, opts.idempotencyKey)
    await this.#send(
      { tenantId, name, jobId, unique: opts.idempotencyKey !== undefined, definition, opts },
      data,
      consistencyToken,
    )
    return { jobId }
  }

  /** Adds outbox rows' jobs (their ids are the rows' ids, so a row added twice is one job). */
  async addRows(rows: readonly OutboxRow[], consistencyToken: string | undefined): Promise<void> {
    for (const row of rows) {
      const job = {
        tenantId: row.tenant_id,
        name: row.name,
        jobId: row.id,
        unique: true,
        definition: this.definition(row.name),
        opts: row.options,
      }
      await this.#send(job, row.payload, consistencyToken)
    }
  }

  /** One job into its queue under a PRODUCER span whose context the job carries. */
  async #send(job: AddRequest, payload: unknown, consistencyToken: string | undefined): Promise<void> {
    const { span, carrier } = this.#telemetry.startSend(job.name, job.tenantId)
    span.setAttribute('messaging.message.id', job.jobId)
    try {
      await this.#add(job, envelopeOf(job.tenantId, payload, consistencyToken, carrier))
      this.#telemetry.end(span)
    } catch (error) {
      const failure = jobsUnavailable(error, 'enqueue')
      this.#telemetry.end(span, failure)
      throw failure
    }
  }

  /**
   * Takes the tenant's fair position and adds the job: one script (ADR 0019), or the fallback's two round
   * trips (which claim a unique id first). An id that is already taken means the job exists (or existed
   * within retentionMs): nothing is added.
   */
  async #add(job: AddRequest, envelope: JobEnvelope): Promise<void> {
    if (this.#scripts === undefined) return this.#addInTwo(job, envelope)
    const band = job.opts.priority ?? 5
    const delayMs = job.opts.delayMs
    await this.#schedulerOfJob(job.name).add({
      tenantId: job.tenantId,
      name: job.name,
      jobId: job.jobId,
      data: JSON.stringify(envelope),
      opts:
        delayMs === undefined
          ? this.#packedOptions(job.definition, band)
          : FairScheduler.packOptions({ ...this.#jobOptions(job.definition, band), delay: delayMs }),
      // BullMQ's own rule: a delay of 0 is no delay.
      delayed: delayMs !== undefined && delayMs > 0,
    })
  }

  /** BullMQ's options of keel's jobs, as `Queue.add` stores them; `priority` is the band's offset. */
  #jobOptions(definition: ResolvedJobDefinition, band: number): Record<string, unknown> {
    return {
      attempts: definition.retries + 1,
      backoff: { type: 'keel' },
      priority: bandOffset(band),
      removeOnComplete: { age: Math.ceil(this.#config.retentionMs / 1_000) },
      removeOnFail: { age: Math.ceil(this.#config.deadLetterRetentionMs / 1_000) },
    }
  }

  #packedOptions(definition: ResolvedJobDefinition, band: number): Buffer {
    const key = `${band}:${definition.name}`
    let packed = this.#packedOpts.get(key)
    if (packed === undefined) {
      packed = FairScheduler.packOptions(this.#jobOptions(definition, band))
      this.#packedOpts.set(key, packed)
    }
    return packed
  }

  /** The fallback: the position (and claim) script, then BullMQ's `Queue.add` with it. */
  async #addInTwo(job: AddRequest, envelope: JobEnvelope): Promise<void> {
    const { tenantId, jobId, unique, opts } = job
    const band = opts.priority ?? 5
    const queueName = queueOf(this.#config.queue, job.name)
    const fair = this.scheduler(queueName)
    const priority = await fair.priority(
      tenantId,
      band,
      unique ? { id: jobId, retentionMs: this.#config.retentionMs } : undefined,
    )
    if (priority === null) return
    try {
      await this.queue(queueName).add(job.name, envelope, {
        ...this.#jobOptions(job.definition, band),
        jobId,
        priority,
        ...(opts.delayMs === undefined ? {} : { delay: opts.delayMs }),
      })
    } catch (error) {
      if (unique) await fair.unclaim(tenantId, jobId).catch(() => undefined)
      else await fair.done(tenantId).catch(() => undefined)
      throw error
    }
  }

  /**
   * The BullMQ queue a job id lives in: its job's (the name is in the id), or the one-queue layout's for
   * an id made before ADR 0025. Undefined for an id keel never made.
   */
  #queueOfId(jobId: string): string | undefined {
    const name = jobNameOf(jobId)
    if (name === undefined) return undefined
    return typeof name === 'string' ? queueOf(this.#config.queue, name) : this.#config.queue
  }

  /**
   * Runs `fn` on the queue of that name: kept open for a defined job's queue (or the one-queue layout's),
   * opened for the call only otherwise, so ids naming arbitrary jobs cannot pile up open queues.
   */
  async #withQueue<R>(queueName: string, fn: (queue: Queue) => Promise<R>): Promise<R> {
    if (this.#queues.has(queueName) || this.#isKept(queueName)) return fn(this.queue(queueName))
    const queue = new Queue(queueName, this.#queueOptions())
    queue.on('error', (error: Error) =>
      this.#logger?.debug({ err: error, queue: queueName }, 'keel jobs: queue error'),
    )
    try {
      return await fn(queue)
    } finally {
      await queue.close().catch(() => undefined)
    }
  }

  #isKept(queueName: string): boolean {
    if (queueName === this.#config.queue) return true
    for (const name of this.#definitions.keys())
      if (queueOf(this.#config.queue, name) === queueName) return true
    return false
  }

  /** The job's status, or null when absent or another tenant's (its existence is not revealed). */
  async status(tenantId: string, jobId: unknown): Promise<JobStatus | null> {
    try {
      return await this.#status(tenantId, jobId)
    } catch (error) {
      throw jobsUnavailable(error, 'jobStatus')
    }
  }

  async #status(tenantId: string, jobId: unknown): Promise<JobStatus | null> {
    if (typeof jobId !== 'string' || jobId.length === 0 || jobId.length > 200) return null
    const queueName = this.#queueOfId(jobId)
    if (queueName === undefined) return null
    return this.#withQueue(queueName, (queue) => this.#read(queue, tenantId, jobId))
  }

  async #read(queue: Queue, tenantId: string, jobId: string): Promise<JobStatus | null> {
    // The state first, then the job: two reads, and the job's fields are at least as new as its state, so
    // a finished state always comes with its result, error and attempts (the other order could pair a
    // job read before its last attempt ended with the state after it).
    const state = STATES[await queue.getJobState(jobId)] ?? 'unknown'
    const job = await queue.getJob(jobId)
    if (job === undefined || !isEnvelope(job.data) || job.data.t !== tenantId) return null
    return {
      id: jobId,
      name: job.name,
      state,
      progress: job.progress,
      attempts: job.attemptsMade,
      result: job.returnvalue ?? null,
      error: job.failedReason ?? null,
      createdAt: job.timestamp,
      finishedAt: job.finishedOn ?? null,
    }
  }

  /** This tenant's jobs that exhausted their retries, newest first (kept deadLetterRetentionMs). */
  async deadLetters(tenantId: string, limit = 100): Promise<JobStatus[]> {
    if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) {
      throw new KeelError('KEEL_JOB_INVALID', 'deadLetters limit must be an integer from 1 to 1000', {
        details: { field: 'limit' },
      })
    }
    try {
      const ids = await this.tenantJobs.deadLetters(tenantId, limit)
      const statuses = await Promise.all(ids.map((id) => this.#status(tenantId, id)))
      return statuses.filter((s): s is JobStatus => s !== null && s.state === 'failed')
    } catch (error) {
      throw jobsUnavailable(error, 'deadLetters')
    }
  }

  /**
   * Runs a dead letter again from its first attempt (after the cause was fixed). False when the job is
   * not one of this tenant's dead letters.
   */
  async redrive(tenantId: string, jobId: unknown): Promise<boolean> {
    try {
      const status = await this.#status(tenantId, jobId)
      if (status === null || status.state !== 'failed') return false
      const queueName = this.#queueOfId(status.id)!
      return await this.#withQueue(queueName, async (queue) => {
        const job = await queue.getJob(status.id)
        if (job === undefined) return false
        if (!(await this.tenantJobs.undead(tenantId, status.id))) return false
        await this.scheduler(queueName).repend(tenantId)
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })
        return true
      })
    } catch (error) {
      throw jobsUnavailable(error, 'redrive')
    }
  }

  /** Closes the queues; JobsRedis closes the connection. */
  async close(): Promise<void> {
    await Promise.all([...this.#queues.values()].map((q) => q.close().catch(() => undefined)))
  }
}

function envelopeOf(
  tenantId: string,
  payload: unknown,
  consistencyToken: string | undefined,
  carrier: Record<string, string>,
): JobEnvelope {
  const envelope: { -readonly [K in keyof JobEnvelope]: JobEnvelope[K] } = { v: 1, t: tenantId, p: payload }
  if (consistencyToken !== undefined) envelope.c = consistencyToken
  // No tracer and no propagator: nothing to carry, and nothing to store.
  for (const _ in carrier) {
    envelope.tc = carrier
    break
  }
  return envelope
}

export function checkEnqueueOptions(options: EnqueueOptions | undefined): EnqueueOptions {
  if (options === undefined) return {}
  const o = options
  const bad = (field: string, message: string) =>
    new KeelError('KEEL_JOB_INVALID', `enqueue option ${field} ${message}`, { details: { field } })
  if (
    o.idempotencyKey !== undefined &&
    (typeof o.idempotencyKey !== 'string' || o.idempotencyKey.length === 0 || o.idempotencyKey.length > 512)
  ) {
    throw bad('idempotencyKey', 'must be a string of 1 to 512 characters')
  }
  if (o.delayMs !== undefined && (!Number.isInteger(o.delayMs) || o.delayMs < 0))
    throw bad('delayMs', 'must be a non-negative integer')
  if (o.priority !== undefined && (!Number.isInteger(o.priority) || o.priority < 1 || o.priority > 10)) {
    throw bad('priority', 'must be an integer from 1 to 10')
  }
  return o
}
