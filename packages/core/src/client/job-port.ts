import type { Queryable } from './query-types.js'

// What the tenant client asks of keel's jobs, and nothing more: jobs/ implements it (JobRuntime) and
// createKeel hands it in, so client/ imports nothing from jobs/ (ADR 0030). The option and status types
// live here because they are part of the client's own API (db.enqueue, db.jobStatus).

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

/** A job written to the outbox inside a transaction: relayed to its queue once the transaction commits. */
export interface OutboxRow {
  tenant_id: string
  id: string
  name: string
  payload: unknown
  options: { delayMs?: number; priority?: number }
}

/** A validated outbox row and the statement that writes it in the caller's transaction. */
export interface StagedJob {
  readonly row: OutboxRow
  readonly text: string
  readonly values: readonly unknown[]
}

export interface JobPort {
  enqueue(
    tenantId: string,
    name: string,
    payload: unknown,
    options: EnqueueOptions | undefined,
    consistencyToken: string | undefined,
  ): Promise<{ jobId: string }>
  status(tenantId: string, jobId: unknown): Promise<JobStatus | null>
  deadLetters(tenantId: string, limit?: number): Promise<JobStatus[]>
  redrive(tenantId: string, jobId: unknown): Promise<boolean>
  /** Validates a tx.enqueue() (definition, payload, options) and builds its outbox row; throws like enqueue. */
  stage(tenantId: string, name: string, payload: unknown, options: EnqueueOptions | undefined): StagedJob
  /** After COMMIT: the rows' jobs into their queues, then the rows deleted through `db` (their tenant's). */
  relay(db: Queryable, rows: readonly OutboxRow[], consistencyToken: string | undefined): Promise<void>
}
