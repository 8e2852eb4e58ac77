import type { EnqueueOptions } from '../client/job-port.js'
import { KeelError } from '../errors.js'

/** Checks db.enqueue() / tx.enqueue() options; KEEL_JOB_INVALID names the field. */
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
