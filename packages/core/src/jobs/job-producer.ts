import type { EnqueueOptions, OutboxRow } from '../client/job-port.js'
import type { ResolvedConfig } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { checkEnqueueOptions } from './enqueue-options.js'
import { bandOffset, FairScheduler } from './fair-scheduler.js'
import { checkPayload, type ResolvedJobDefinition } from './job-definition.js'
import type { JobEnvelope } from './job-envelope.js'
import { jobIdFor } from './job-queues.js'
import { jobsUnavailable } from './jobs-redis.js'
import type { QueueRegistry } from './queue-registry.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

/** One job to add: who, what, its id (unique: from an idempotency key or an outbox row) and options. */
interface AddRequest {
  readonly tenantId: string
  readonly name: string
  readonly jobId: string
  readonly unique: boolean
  readonly definition: ResolvedJobDefinition
  readonly opts: EnqueueOptions
}

/** A validated enqueue: its definition, payload (as the schema parsed it), options and job id. */
export interface CheckedEnqueue {
  readonly definition: ResolvedJobDefinition
  readonly data: unknown
  readonly opts: EnqueueOptions
  readonly jobId: string
}

/** Not a valid token on purpose: a session resumed from it reads the primary. */
export const SWEPT_TOKEN = 'outbox-swept'

/**
 * The enqueue path of keel's jobs (BullMQ's `Queue.add` side): validated enqueues into each job's own
 * queue (ADR 0025), one script each (ADR 0019) or the two-round-trip fallback. The queues, schedulers
 * and connection are the registry's; reads by id are JobReader's.
 */
export class JobProducer {
  readonly #config: JobsConfig
  readonly #definitions: ReadonlyMap<string, ResolvedJobDefinition>
  readonly #telemetry: JobTelemetry
  readonly #queues: QueueRegistry
  readonly #byJob = new Map<string, FairScheduler>()
  /** Packed BullMQ options per job name and band, for jobs without a delay. */
  readonly #packedOpts = new Map<string, Buffer>()

  constructor(
    config: JobsConfig,
    definitions: ReadonlyMap<string, ResolvedJobDefinition>,
    telemetry: JobTelemetry,
    queues: QueueRegistry,
  ) {
    this.#config = config
    this.#definitions = definitions
    this.#telemetry = telemetry
    this.#queues = queues
  }

  /** The scheduler of a job's queue, by job name (the enqueue's hot path: no queue name to build). */
  #schedulerOfJob(jobName: string): FairScheduler {
    let scheduler = this.#byJob.get(jobName)
    if (scheduler === undefined) {
      scheduler = this.#queues.scheduler(this.#queues.queueOfJob(jobName))
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
        'KEEL_JOB_UNKNOWN',
        `no job ${JSON.stringify(name)} was defined with keel.defineJob()`,
        {
          details: { name },
        },
      )
    }
    return definition
  }

  /** Validates an enqueue (db.enqueue, tx.enqueue) before anything is written: name, payload, options. */
  check(
    tenantId: string,
    name: string,
    payload: unknown,
    options: EnqueueOptions | undefined,
  ): CheckedEnqueue {
    const definition = this.definition(name)
    const data = checkPayload(definition, payload)
    const opts = checkEnqueueOptions(options)
    return { definition, data, opts, jobId: jobIdFor(tenantId, name, opts.idempotencyKey) }
  }

  async enqueue(
    tenantId: string,
    name: string,
    payload: unknown,
    options: EnqueueOptions | undefined,
    consistencyToken: string | undefined,
  ): Promise<{ jobId: string }> {
    const { definition, data, opts, jobId } = this.check(tenantId, name, payload, options)
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
      await this.#queues.ready()
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
    if (this.#queues.scripts === undefined) return this.#addInTwo(job, envelope)
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
    const queueName = this.#queues.queueOfJob(job.name)
    const fair = this.#queues.scheduler(queueName)
    const priority = await fair.priority(
      tenantId,
      band,
      unique ? { id: jobId, retentionMs: this.#config.retentionMs } : undefined,
    )
    if (priority === null) return
    try {
      await this.#queues.queue(queueName).add(job.name, envelope, {
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
