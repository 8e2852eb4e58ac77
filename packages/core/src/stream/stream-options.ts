import type { Consistency } from '../client/query-types.js'
import { KeelError } from '../errors.js'

/** db.stream()'s options. */
export interface StreamOptions {
  /** Rows fetched per round trip (FETCH n), and so the most rows held in memory at once. Default 1,000. */
  batchSize?: number
  /** Cancels the FETCH in flight (the connection is then retired) or ends the stream between batches. */
  signal?: AbortSignal
  /** Overrides `postgres.consistency` for this read: 'session' reads a replica only once it has replayed this session's writes. */
  consistency?: Consistency
  /** statement_timeout for each statement of the stream (each FETCH), overriding the tenant's (0 = the server's). */
  statementTimeoutMs?: number
}

/** db.export()'s options. */
export interface ExportOptions {
  /** Unqualified table names (identifiers only): the tenant's scope decides which rows, and in schema mode which schema. */
  tables: readonly string[]
  /** 'ndjson': one `{"table":name,"row":{...}}` line per row; 'csv': one table, a header line, RFC 4180 quoting. */
  format: 'ndjson' | 'csv'
  /** Rows fetched per round trip. Default 1,000. */
  batchSize?: number
  /** Destroys the stream (an AbortError), cancelling the FETCH in flight. */
  signal?: AbortSignal
  /** Overrides `postgres.consistency`: where the snapshot may be taken (see StreamOptions). */
  consistency?: Consistency
  /** statement_timeout for each FETCH, overriding the tenant's (0 = the server's). */
  statementTimeoutMs?: number
}

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
