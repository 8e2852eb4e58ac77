export type { ExportOptions, StreamOptions } from '../client/read-session.js'

import { KeelError } from '../errors.js'

export const DEFAULT_BATCH_SIZE = 1_000
const MAX_BATCH_SIZE = 100_000

/** The batch size asked for, checked: an integer in 1..100,000 (KEEL_QUERY_INVALID otherwise). */
export function batchSizeOf(asked: number | undefined): number {
  if (asked === undefined) return DEFAULT_BATCH_SIZE
  if (!Number.isInteger(asked) || asked < 1 || asked > MAX_BATCH_SIZE) {
    throw new KeelError('KEEL_QUERY_INVALID', `batchSize must be an integer from 1 to ${MAX_BATCH_SIZE}`)
  }
  return asked
}
