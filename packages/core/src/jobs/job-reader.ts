import type { Queue } from 'bullmq'
import type { JobState, JobStatus } from '../client/job-port.js'
import { KeelError } from '../errors.js'
import { isEnvelope } from './job-envelope.js'
import { jobsUnavailable } from './jobs-redis.js'
import type { QueueRegistry } from './queue-registry.js'

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
 * A tenant's view of its jobs by id: status, dead letters, redrive. A job of another tenant reads as
 * absent (its existence is not revealed). The job's queue comes from its id (ADR 0025).
 */
export class JobReader {
  readonly #queues: QueueRegistry

  constructor(queues: QueueRegistry) {
    this.#queues = queues
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
    const queueName = this.#queues.queueOfId(jobId)
    if (queueName === undefined) return null
    await this.#queues.ready()
    return this.#queues.withQueue(queueName, (queue) => read(queue, tenantId, jobId))
  }

  /** This tenant's jobs that exhausted their retries, newest first (kept deadLetterRetentionMs). */
  async deadLetters(tenantId: string, limit = 100): Promise<JobStatus[]> {
    if (!Number.isInteger(limit) || limit < 1 || limit > 1_000) {
      throw new KeelError('KEEL_JOB_INVALID', 'deadLetters limit must be an integer from 1 to 1000', {
        details: { field: 'limit' },
      })
    }
    try {
      await this.#queues.ready()
      const ids = await this.#queues.tenantJobs.deadLetters(tenantId, limit)
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
      const queueName = this.#queues.queueOfId(status.id)!
      return await this.#queues.withQueue(queueName, async (queue) => {
        const job = await queue.getJob(status.id)
        if (job === undefined) return false
        if (!(await this.#queues.tenantJobs.undead(tenantId, status.id))) return false
        await this.#queues.scheduler(queueName).repend(tenantId)
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })
        return true
      })
    } catch (error) {
      throw jobsUnavailable(error, 'redrive')
    }
  }
}

async function read(queue: Queue, tenantId: string, jobId: string): Promise<JobStatus | null> {
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
