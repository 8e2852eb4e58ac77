import { createHash, randomUUID } from 'node:crypto'
import { context } from '@opentelemetry/api'
import { DelayedError, type Job, type MinimalJob, Queue, QueueKeys, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import type pg from 'pg'
import type { TenantClient } from '../client/tenant-client.js'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import { buildEnqueueScripts, type EnqueueScripts } from './enqueue-script.js'
import { bandOffset, FairScheduler } from './fair-scheduler.js'
import { checkPayload, type ResolvedJobDefinition } from './job-definition.js'
import { isEnvelope, type JobEnvelope } from './job-envelope.js'
import { OUTBOX_TABLE, type OutboxRow, RELAY_SETTING } from './outbox.js'

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

/** Resolves a tenant's db and runs code as that tenant: supplied by keel, so jobs need no keel import. */
export interface JobHost {
  runAs<R>(
    tenantId: string,
    consistencyToken: string | undefined,
    fn: (db: TenantClient) => Promise<R>,
  ): Promise<R>
  /** The primary's pool, for the outbox relay (it reads every tenant's pending rows). */
  readonly primaryPool: pg.Pool
}

export interface StartWorkerOptions {
  /** Which defined jobs this worker runs. @default all defined */
  jobs?: readonly string[]
  /** Jobs run at once by this worker. @default 10 */
  concurrency?: number
}

export function jobIdFor(tenantId: string, name: string, idempotencyKey: string | undefined): string {
  if (idempotencyKey === undefined) return `j-${randomUUID()}`
  // BullMQ ids cannot contain ':'; a digest also keeps long keys short and opaque.
  const digest = createHash('sha256').update(`${tenantId}\u0000${name}\u0000${idempotencyKey}`).digest('hex')
  return `k-${digest.slice(0, 40)}`
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

/**
 * keel's jobs on BullMQ: validated payloads, idempotency keys, tenant-scoped status, workers that run
 * each job as its tenant with the producer's consistency token and trace.
 */
export class JobRuntime {
  readonly #config: JobsConfig
  readonly #definitions: ReadonlyMap<string, ResolvedJobDefinition>
  readonly #telemetry: JobTelemetry
  readonly #logger: Logger | undefined
  readonly #workers: Worker[] = []
  #queue: Queue | undefined
  #fair: FairScheduler | undefined
  #sweeper: NodeJS.Timeout | undefined
  #sweeping = false
  /** keel's one-round-trip enqueue scripts; undefined: the two-round-trip fallback (ADR 0019). */
  readonly #scripts: EnqueueScripts | undefined
  /** Packed BullMQ options per job name and band, for jobs without a delay. */
  readonly #packedOpts = new Map<string, Buffer>()

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
    this.#config = config
    this.#definitions = definitions
    this.#telemetry = telemetry
    this.#logger = logger
    this.#scripts = scripts === 'bullmq' ? this.#buildScripts() : undefined
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

  #connection(forWorker: boolean): Redis {
    // BullMQ workers block on Redis and must retry forever; producers should fail fast.
    const redis = new Redis(
      this.#config.redis.url,
      forWorker ? { maxRetriesPerRequest: null } : { maxRetriesPerRequest: 1 },
    )
    redis.on('error', (error: Error) =>
      this.#logger?.debug({ err: error }, 'keel jobs: redis connection error'),
    )
    return redis
  }

  get fair(): FairScheduler {
    if (this.#fair !== undefined) return this.#fair
    // The queue opens with the producer: its depth gauge, status reads and the fallback's adds.
    void this.queue
    this.#fair = new FairScheduler(
      this.#connection(false),
      `${this.#config.prefix}:${this.#config.queue}:keel`,
      new QueueKeys(this.#config.prefix).getKeys(this.#config.queue),
      this.#config.retentionMs,
      this.#scripts,
    )
    return this.#fair
  }

  get queue(): Queue {
    if (this.#queue === undefined) {
      const queue = new Queue(this.#config.queue, {
        connection: this.#connection(false),
        prefix: this.#config.prefix,
      })
      this.#queue = queue
      this.#telemetry.observeDepth(() =>
        queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed'),
      )
    }
    return this.#queue
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

  /** One job into the queue under a PRODUCER span whose context the job carries. */
  async #send(job: AddRequest, payload: unknown, consistencyToken: string | undefined): Promise<void> {
    const { span, carrier } = this.#telemetry.startSend(job.name, job.tenantId)
    span.setAttribute('messaging.message.id', job.jobId)
    try {
      await this.#add(job, envelopeOf(job.tenantId, payload, consistencyToken, carrier))
      this.#telemetry.end(span)
    } catch (error) {
      this.#telemetry.end(span, error)
      throw error
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
    await this.fair.add({
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
    const priority = await this.fair.priority(
      tenantId,
      band,
      unique ? { id: jobId, retentionMs: this.#config.retentionMs } : undefined,
    )
    if (priority === null) return
    try {
      await this.queue.add(job.name, envelope, {
        ...this.#jobOptions(job.definition, band),
        jobId,
        priority,
        ...(opts.delayMs === undefined ? {} : { delay: opts.delayMs }),
      })
    } catch (error) {
      if (unique) await this.fair.unclaim(tenantId, jobId).catch(() => undefined)
      else await this.fair.done(tenantId).catch(() => undefined)
      throw error
    }
  }

  /**
   * Moves committed outbox rows to the queue and deletes them. A row's id is its job's id, so a row relayed
   * twice (after commit, and by a sweeper that found it) is one job: the second add finds it.
   */
  async relay(
    pool: pg.Pool,
    rows: readonly OutboxRow[],
    consistencyToken: string | undefined,
  ): Promise<void> {
    await this.#addRows(rows, consistencyToken)
    await deleteOutboxRows(pool, rows)
  }

  async #addRows(rows: readonly OutboxRow[], consistencyToken: string | undefined): Promise<void> {
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

  /**
   * Relays rows whose transaction committed but whose process died before relaying them (older than
   * `ageMs`). Rows are locked while relayed, so concurrent sweepers split the work.
   */
  async sweep(pool: pg.Pool, ageMs: number): Promise<number> {
    const client = await pool.connect()
    let failure: unknown
    try {
      await client.query('BEGIN')
      await client.query(`SELECT set_config('${RELAY_SETTING}', 'on', true)`)
      const { rows } = await client.query<OutboxRow>(
        `SELECT tenant_id, id, name, payload, options FROM ${OUTBOX_TABLE}
         WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED`,
        [ageMs / 1_000],
      )
      // A swept job cannot know how far its transaction's WAL reached: it reads the primary.
      await this.#addRows(rows, SWEPT_TOKEN)
      if (rows.length > 0) {
        await deleteRelayed(client, rows)
      }
      await client.query('COMMIT')
      return rows.length
    } catch (error) {
      failure = error
      await client.query('ROLLBACK').catch(() => undefined)
      throw error
    } finally {
      client.release(failure === undefined ? undefined : true)
    }
  }

  /** The job's status, or null when absent or another tenant's (its existence is not revealed). */
  async status(tenantId: string, jobId: unknown): Promise<JobStatus | null> {
    if (typeof jobId !== 'string' || jobId.length === 0 || jobId.length > 100) return null
    // The state first, then the job: two reads, and the job's fields are at least as new as its state, so
    // a finished state always comes with its result, error and attempts (the other order could pair a
    // job read before its last attempt ended with the state after it).
    const state = STATES[await this.queue.getJobState(jobId)] ?? 'unknown'
    const job = await this.queue.getJob(jobId)
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
    const ids = await this.fair.deadLetters(tenantId, limit)
    const statuses = await Promise.all(ids.map((id) => this.status(tenantId, id)))
    return statuses.filter((s): s is JobStatus => s !== null && s.state === 'failed')
  }

  /**
   * Runs a dead letter again from its first attempt (after the cause was fixed). False when the job is
   * not one of this tenant's dead letters.
   */
  async redrive(tenantId: string, jobId: unknown): Promise<boolean> {
    const status = await this.status(tenantId, jobId)
    if (status === null || status.state !== 'failed') return false
    const job = await this.queue.getJob(status.id)
    if (job === undefined) return false
    if (!(await this.fair.undead(tenantId, status.id))) return false
    await this.fair.repend(tenantId)
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })
    return true
  }

  startWorker(host: JobHost, options: StartWorkerOptions = {}): Worker {
    const names = options.jobs ?? [...this.#definitions.keys()]
    for (const name of names) this.definition(name)
    const concurrency = options.concurrency ?? 10
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1_000) {
      throw new KeelError('KEEL_JOB_INVALID', 'startWorker concurrency must be an integer from 1 to 1000', {
        details: { field: 'concurrency' },
      })
    }
    const accepted = new Set(names)
    const worker = new Worker(
      this.#config.queue,
      (job: Job, token?: string) => this.#process(host, accepted, job, token),
      {
        connection: this.#connection(true),
        prefix: this.#config.prefix,
        concurrency,
        lockDuration: this.#config.lockDurationMs,
        stalledInterval: Math.max(1_000, Math.floor(this.#config.lockDurationMs / 2)),
        maxStalledCount: 3,
        settings: {
          backoffStrategy: (attemptsMade: number, _type?: string, _error?: Error, job?: MinimalJob) => {
            const definition = job === undefined ? undefined : this.#definitions.get(job.name)
            return backoffDelay(
              attemptsMade,
              definition?.backoffDelayMs ?? 1_000,
              definition?.backoffMaxMs ?? 300_000,
            )
          },
        },
      },
    )
    worker.on('error', (error) => this.#logger?.warn({ err: error }, 'keel jobs: worker error'))
    this.#startSweeper(host.primaryPool)
    // A tenant's pending count (its fair-share position) drops when a job is done for good.
    const settled = (job: Job | undefined) => {
      if (job !== undefined && isEnvelope(job.data)) this.fair.done(job.data.t).catch(() => undefined)
    }
    worker.on('completed', settled)
    worker.on('failed', (job) => {
      if (job === undefined || job.attemptsMade < (job.opts.attempts ?? 1)) return
      settled(job)
      if (isEnvelope(job.data)) {
        const retention = this.#config.deadLetterRetentionMs
        this.fair.deadLetter(job.data.t, String(job.id), Date.now(), retention).catch((error: unknown) => {
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
    this.#workers.push(worker)
    return worker
  }

  async #process(host: JobHost, accepted: ReadonlySet<string>, job: Job, token?: string): Promise<unknown> {
    const definition = this.#definitions.get(job.name)
    if (definition === undefined || !accepted.has(job.name)) {
      throw new KeelError('KEEL_UNKNOWN_JOB', `this worker does not run job ${JSON.stringify(job.name)}`)
    }
    if (!isEnvelope(job.data))
      throw new KeelError('KEEL_JOB_PAYLOAD_INVALID', 'the job data is not a keel job')
    const envelope = job.data
    const cap = this.#config.tenantConcurrency
    const slot =
      cap > 0
        ? await this.fair.acquire(envelope.t, String(job.id), cap, this.#config.lockDurationMs)
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

  #startSweeper(pool: pg.Pool): void {
    if (this.#sweeper !== undefined || !this.#config.outbox) return
    const every = this.#config.outboxSweepMs
    this.#sweeper = setInterval(() => {
      if (this.#sweeping) return
      this.#sweeping = true
      this.sweep(pool, every)
        .catch((error: unknown) => this.#logger?.warn({ err: error }, 'keel jobs: outbox sweep failed'))
        .finally(() => {
          this.#sweeping = false
        })
    }, every)
    this.#sweeper.unref()
  }

  /** Stops taking jobs, waits (bounded) for the running ones, closes connections. */
  async close(): Promise<void> {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper)
    const graceful = Promise.all(this.#workers.map((w) => w.close()))
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#config.closeTimeoutMs)
    })
    const outcome = await Promise.race([graceful.then(() => 'done' as const), bound])
    clearTimeout(timer)
    if (outcome === 'timeout') {
      // Abandoned jobs keep their lock until it expires; then another worker picks them up.
      this.#logger?.warn(
        { timeoutMs: this.#config.closeTimeoutMs },
        'keel jobs: close timed out; running jobs abandoned',
      )
      await Promise.all(this.#workers.map((w) => w.close(true)))
    }
    await this.#queue?.close()
    await this.#fair?.close()
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

/** Not a valid token on purpose: a session resumed from it reads the primary. */
const SWEPT_TOKEN = 'outbox-swept'

/** Deletes relayed outbox rows, in a transaction that has the relay setting on (it sees every tenant). */
function deleteRelayed(client: pg.PoolClient, rows: readonly OutboxRow[]): Promise<unknown> {
  return client.query(
    `DELETE FROM ${OUTBOX_TABLE} WHERE (tenant_id, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [rows.map((r) => r.tenant_id), rows.map((r) => r.id)],
  )
}

async function deleteOutboxRows(pool: pg.Pool, rows: readonly OutboxRow[]): Promise<void> {
  if (rows.length === 0) return
  const client = await pool.connect()
  let failure: unknown
  try {
    await client.query('BEGIN')
    await client.query(`SELECT set_config('${RELAY_SETTING}', 'on', true)`)
    await deleteRelayed(client, rows)
    await client.query('COMMIT')
  } catch (error) {
    failure = error
    await client.query('ROLLBACK').catch(() => undefined)
    throw error
  } finally {
    client.release(failure === undefined ? undefined : true)
  }
}

/** Exponential backoff with equal jitter: half the exponential delay, plus a random half. */
export function backoffDelay(attemptsMade: number, baseMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.max(0, attemptsMade - 1))
  return Math.round(exponential / 2 + Math.random() * (exponential / 2))
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
