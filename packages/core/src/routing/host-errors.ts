import { isKeelError } from '../errors.js'

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENOTFOUND',
  '57P01', // admin_shutdown (terminated, or the server is shutting down)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, or in recovery and not yet consistent)
  'KEEL_DB_UNAVAILABLE', // keel's own: opening a connection to the host failed (pool/host-pool.ts)
])

// Not pg-pool's "timeout exceeded when trying to connect": that is a wait for a busy pool (saturation,
// KEEL_POOL_TIMEOUT), while a connection attempt that times out is "Connection terminated due to ...".
const CONNECTION_MESSAGES =
  /Connection terminated|not queryable|Client was closed|Connection terminated due to connection timeout|the database system is (?:starting up|shutting down|in recovery)/i

/**
 * True when the error says the host (not the statement) failed: the statement may or may not have run
 * on a primary, but a read on a replica is safe to send elsewhere. A full pool is not a failure.
 */
export function isHostFailure(error: unknown): boolean {
  // The host did not answer within the client-side deadline, or was found down mid-statement.
  if (isKeelError(error, 'KEEL_QUERY_TIMEOUT')) return true
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return true
  const message = (error as { message?: unknown } | null)?.message
  return typeof message === 'string' && CONNECTION_MESSAGES.test(message)
}

/** A replica cancelled the read because replay needed what it was reading (recovery conflict). */
export function isRecoveryConflict(error: unknown): boolean {
  const e = error as { code?: string; message?: string } | null
  return e?.code === '40001' && /conflict with recovery/i.test(e.message ?? '')
}

/** A replica refused a statement that writes: nothing ran. */
export function isReadOnlyRefusal(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === '25006'
}

// undefined_table, undefined_column, undefined_function, undefined_object, invalid_schema_name
const SCHEMA_LAG_CODES = new Set(['42P01', '42703', '42883', '42704', '3F000'])

/**
 * The replica does not know an object the statement names: it may not have replayed the migration that
 * created it yet. The primary decides (if it fails there too, that error is the caller's).
 */
export function isSchemaLag(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && SCHEMA_LAG_CODES.has(code)
}
