import type { Job } from 'bullmq'
import { type ZodType, z } from 'zod'
import type { TenantClient } from '../client/tenant-client.js'
import { KeelError } from '../errors.js'

/** What a handler gets besides its payload. */
export interface JobContext {
  /** The job's tenant client, resuming the producer's consistency token: it reads what the request wrote. */
  readonly db: TenantClient
  /** The BullMQ job (id, attemptsMade, updateProgress, ...). */
  readonly job: Job
  /** Aborted when the attempt times out or the worker shuts down past its grace period. */
  readonly signal: AbortSignal
}

export interface JobDefinition<P = unknown, R = unknown> {
  /** Validates the payload at enqueue (nothing is enqueued when it fails) and again before the handler. */
  schema: ZodType<P>
  handler: (payload: P, context: JobContext) => Promise<R>
  /** Attempts after the first. @default 3 */
  retries?: number
  /** Exponential backoff with jitter: the first retry waits about `delayMs`, each next one twice as long. */
  backoff?: { delayMs?: number; maxDelayMs?: number }
  /** How long one attempt may run. @default 300000 (5 min) */
  timeoutMs?: number
}

export interface ResolvedJobDefinition {
  readonly name: string
  readonly schema: ZodType
  readonly handler: (payload: unknown, context: JobContext) => Promise<unknown>
  readonly retries: number
  readonly backoffDelayMs: number
  readonly backoffMaxMs: number
  readonly timeoutMs: number
}

const definitionSchema = z.strictObject({
  schema: z.custom<ZodType>((v) => typeof (v as { safeParse?: unknown } | null)?.safeParse === 'function', {
    message: 'must be a zod schema',
  }),
  handler: z.custom<(...args: unknown[]) => Promise<unknown>>((v) => typeof v === 'function', {
    message: 'must be a function',
  }),
  retries: z.number().int().min(0).max(100).default(3),
  backoff: z
    .strictObject({
      delayMs: z.number().int().min(0).default(1_000),
      maxDelayMs: z.number().int().min(0).default(300_000),
    })
    .prefault({}),
  timeoutMs: z.number().int().min(1).default(300_000),
})

export const JOB_NAME = /^[A-Za-z0-9_.-]{1,100}$/

export function resolveDefinition(name: unknown, definition: unknown): ResolvedJobDefinition {
  if (typeof name !== 'string' || !JOB_NAME.test(name)) {
    throw new KeelError('KEEL_JOB_INVALID', 'a job name is 1-100 letters, digits, ".", "_" or "-"', {
      details: { field: 'name' },
    })
  }
  const parsed = definitionSchema.safeParse(definition)
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => i.path.join('.'))
    throw new KeelError(
      'KEEL_JOB_INVALID',
      `invalid job definition for ${JSON.stringify(name)}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      { details: { name, fields } },
    )
  }
  const d = parsed.data
  return {
    name,
    schema: d.schema,
    handler: d.handler as ResolvedJobDefinition['handler'],
    retries: d.retries,
    backoffDelayMs: d.backoff.delayMs,
    backoffMaxMs: d.backoff.maxDelayMs,
    timeoutMs: d.timeoutMs,
  }
}

/** Validates a payload against its job's schema; the error carries the zod issues (paths and messages). */
export function checkPayload(definition: ResolvedJobDefinition, payload: unknown): unknown {
  const parsed = definition.schema.safeParse(payload)
  if (!parsed.success) {
    throw new KeelError(
      'KEEL_JOB_PAYLOAD_INVALID',
      `payload for job ${JSON.stringify(definition.name)} is invalid`,
      {
        details: {
          job: definition.name,
          issues: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
        },
      },
    )
  }
  return parsed.data
}
