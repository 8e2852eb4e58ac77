import { Transform, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { z } from 'zod'
import type { TenantClient } from '../client/tenant-client.js'
import { KeelError } from '../errors.js'
import type { ExportProgressEvent } from '../stream/export-stream.js'
import type { JobContext, JobDefinition } from './job-definition.js'

/** What an export job's payload asks for (checked with zod at enqueue and before each attempt). */
export interface ExportJobPayload {
  /** Unqualified table names, exported in this order from one snapshot. */
  tables: string[]
  /** 'ndjson' (default): `{"table":name,"row":{...}}` lines; 'csv': exactly one table. */
  format: 'ndjson' | 'csv'
}

/** Handed to the sink factory: which export, which attempt (a retry gets a fresh sink). */
export interface ExportSinkContext {
  /** The job's tenant: whose rows are written. */
  readonly tenantId: string
  /** The BullMQ job id (the same for every attempt of the job). */
  readonly jobId: string
  /** 1 for the first attempt, 2 for the first retry, ... */
  readonly attempt: number
  /** The validated payload (tables, format). */
  readonly payload: ExportJobPayload
  /** Aborted when the attempt times out or the worker shuts down. */
  readonly signal: AbortSignal
}

/**
 * Where an export job writes: a Writable made per attempt. The job pipes the export into it with
 * `stream.pipeline()` (backpressure both ways) and resolves only once it finished ('finish' after its
 * `_final`: a file is renamed into place, an upload completed there). On any failure it is destroyed
 * with the error: the sink drops what it wrote (fileSink deletes its temp file; an S3 upload aborts).
 */
export type ExportSink = (context: ExportSinkContext) => Writable | Promise<Writable>

/** BullMQ job progress of an export job, also in `db.jobStatus(id).progress`. */
export interface ExportJobProgress {
  /** Rows read so far in this attempt (a retry starts again from 0: ADR 0045). */
  rows: number
  /** Rows expected (a count at the start of the attempt), null with `estimate: 'none'`; never below `rows`. */
  estimatedRows: number | null
  /** 0-100 when estimatedRows is known, else null. */
  percent: number | null
  /** The table being read. */
  table: string
  /** Which attempt reports it (1 for the first). */
  attempt: number
}

/** What an export job resolves with (its BullMQ return value). */
export interface ExportJobResult {
  /** Rows written, all tables together. */
  rows: number
  /** Rows per table. */
  tables: Record<string, number>
  /** Bytes written to the sink (UTF-8). */
  bytes: number
  /** The attempt that completed. */
  attempt: number
}

/** exportJob()'s options, checked with zod (KEEL_JOB_INVALID). */
export interface ExportJobOptions {
  /** The Writable each attempt writes to (see {@link ExportSink}; `fileSink(path)` for a file). */
  sink: ExportSink
  /**
   * The tables a payload may name. An export job is usually enqueued on a user's behalf ("download my
   * data"): list the tables that are theirs to download. Default: any unqualified identifier.
   */
  tables?: readonly string[]
  /** 'count' (default): `SELECT count(*)` per table (tenant-scoped) before the export, for progress; 'none': no estimate. */
  estimate?: 'count' | 'none'
  /** At most one progress update per this many ms (and one at the end). @default 1000 */
  progressIntervalMs?: number
  /** Accepted for compatibility; an export reads through COPY, which has no batches. */
  batchSize?: number
  /** Paces each attempt's export (db.export's maxRowsPerSecond): neighbours keep their CPU. Default: unpaced. */
  maxRowsPerSecond?: number
  /** Attempts after the first; each restarts the export from a new snapshot (ADR 0045). @default 3 */
  retries?: number
  /** Between attempts, as for any job: about `delayMs` (1000) doubling up to `maxDelayMs` (300000). */
  backoff?: { delayMs?: number; maxDelayMs?: number }
  /** One attempt's limit. @default 3600000 (1 h) */
  timeoutMs?: number
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

const optionsSchema = z.strictObject({
  sink: z.custom<ExportSink>((v) => typeof v === 'function', { message: 'must be a function' }),
  tables: z.array(z.string().regex(IDENTIFIER, 'must be an unqualified identifier')).min(1).optional(),
  estimate: z.enum(['count', 'none']).default('count'),
  progressIntervalMs: z.number().int().min(0).default(1_000),
  batchSize: z.number().int().min(1).max(100_000).optional(),
  maxRowsPerSecond: z.number().positive().finite().optional(),
  retries: z.number().int().min(0).max(100).default(3),
  backoff: z
    .strictObject({
      delayMs: z.number().int().min(0).optional(),
      maxDelayMs: z.number().int().min(0).optional(),
    })
    .optional(),
  timeoutMs: z.number().int().min(1).default(3_600_000),
})

/**
 * A job definition that exports the job's tenant's tables to a sink the app provides:
 *
 *     keel.defineJob('tenant.export', exportJob({ sink: fileSink(({ jobId }) => `/exports/${jobId}.ndjson`) }))
 *     const { jobId } = await db.enqueue('tenant.export', { tables: ['customers', 'invoices'] })
 *     (await db.jobStatus(jobId))?.progress   // { rows, estimatedRows, percent, table, attempt }
 *
 * Each attempt is the whole export from one fresh snapshot into a fresh sink: a retried or crashed
 * attempt restarts, it does not resume (ADR 0045), so the sink must replace, not append (fileSink
 * writes a temp file and renames it on success). Throws KEEL_JOB_INVALID for bad options; a failing
 * sink fails the attempt with KEEL_EXPORT_SINK_FAILED (the export's transaction ends, its connection
 * goes back to the pool).
 */
export function exportJob(options: ExportJobOptions): JobDefinition<ExportJobPayload, ExportJobResult> {
  const parsed = optionsSchema.safeParse(options)
  if (!parsed.success) {
    throw new KeelError(
      'KEEL_JOB_INVALID',
      `invalid exportJob options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      { details: { fields: parsed.error.issues.map((i) => i.path.join('.')) } },
    )
  }
  const o = parsed.data
  const allowed = o.tables === undefined ? undefined : new Set(o.tables)
  const table = z
    .string()
    .regex(IDENTIFIER, 'must be an unqualified identifier')
    .refine((t) => allowed === undefined || allowed.has(t), { message: 'is not a table this job exports' })
  const schema = z
    .strictObject({
      tables: z.array(table).min(1).max(100),
      format: z.enum(['ndjson', 'csv']).default('ndjson'),
    })
    .refine((p) => p.format !== 'csv' || p.tables.length === 1, {
      message: "format 'csv' exports exactly one table",
      path: ['tables'],
    })
  return {
    // zod's input type (format optional) differs from its output; the definition is typed by the output.
    schema: schema as unknown as JobDefinition<ExportJobPayload>['schema'],
    retries: o.retries,
    timeoutMs: o.timeoutMs,
    ...(o.backoff === undefined
      ? {}
      : {
          backoff: {
            ...(o.backoff.delayMs === undefined ? {} : { delayMs: o.backoff.delayMs }),
            ...(o.backoff.maxDelayMs === undefined ? {} : { maxDelayMs: o.backoff.maxDelayMs }),
          },
        }),
    handler: (payload, context) => runExport(payload, context, o),
  }
}

type Resolved = z.output<typeof optionsSchema>

async function runExport(
  payload: ExportJobPayload,
  { db, job, signal }: JobContext,
  options: Resolved,
): Promise<ExportJobResult> {
  const attempt = job.attemptsMade + 1
  const estimatedRows = options.estimate === 'count' ? await countRows(db, payload.tables, signal) : null
  const tables: Record<string, number> = Object.fromEntries(payload.tables.map((t) => [t, 0]))
  let progress: ExportJobProgress = {
    rows: 0,
    estimatedRows,
    percent: estimatedRows === null ? null : 0,
    table: payload.tables[0]!,
    attempt,
  }
  // Progress is written to Redis at most every progressIntervalMs, one write at a time; a failed write
  // is dropped (the next one carries the newer count), only the final one can fail the attempt.
  let lastSent = 0
  let sending: Promise<unknown> = job.updateProgress(progress).catch(() => undefined)
  const report = () => {
    const now = Date.now()
    if (now - lastSent < options.progressIntervalMs) return
    lastSent = now
    const snapshot = progress
    sending = sending.then(() => job.updateProgress(snapshot)).catch(() => undefined)
  }
  let sink: Writable
  try {
    sink = await options.sink({ tenantId: db.tenantId, jobId: String(job.id), attempt, payload, signal })
  } catch (error) {
    throw sinkFailed(error, db.tenantId, job.id)
  }
  if (typeof (sink as Partial<Writable> | null)?.write !== 'function') {
    throw sinkFailed(new TypeError('the sink did not return a Writable'), db.tenantId, job.id)
  }
  // Opened after the sink: a sink that cannot be made costs no snapshot.
  const out = db.export({
    tables: payload.tables,
    format: payload.format,
    signal,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.maxRowsPerSecond === undefined ? {} : { maxRowsPerSecond: options.maxRowsPerSecond }),
  })
  out.on('progress', (event: ExportProgressEvent) => {
    tables[event.table] = event.tableRows
    const estimate = estimatedRows === null ? null : Math.max(estimatedRows, event.rows)
    progress = {
      rows: event.rows,
      estimatedRows: estimate,
      percent: estimate === null || estimate === 0 ? null : Math.floor((event.rows / estimate) * 100),
      table: event.table,
      attempt,
    }
    report()
  })
  let bytes = 0
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length
      callback(null, chunk)
    },
  })
  // Which side failed first: pipeline() then destroys the other with the same error.
  let first: 'export' | 'sink' | undefined
  out.once('error', () => {
    first ??= 'export'
  })
  sink.once('error', () => {
    first ??= 'sink'
  })
  try {
    await pipeline(out, counter, sink, { signal })
  } catch (error) {
    if (first === 'sink' && !signal.aborted) throw sinkFailed(error, db.tenantId, job.id)
    throw error
  }
  progress = { ...progress, percent: 100, estimatedRows: progress.rows }
  await sending
  await job.updateProgress(progress)
  return { rows: progress.rows, tables, bytes, attempt }
}

async function countRows(db: TenantClient, tables: readonly string[], signal: AbortSignal): Promise<number> {
  let total = 0
  // Tables were checked as identifiers by the payload schema.
  for (const table of tables) {
    const r = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table}`, [], { signal })
    total += Number(r.rows[0]?.n ?? 0)
  }
  return total
}

function sinkFailed(error: unknown, tenantId: string, jobId: string | undefined): KeelError {
  return new KeelError(
    'KEEL_EXPORT_SINK_FAILED',
    `the export's sink failed: ${error instanceof Error ? error.message : String(error)}`,
    { cause: error, details: { tenantId, jobId: String(jobId) } },
  )
}
