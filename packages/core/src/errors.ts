/**
 * Every error keel raises is a `KeelError` with a stable `code`. Codes are never renamed or reused;
 * a retired code stays in this table, marked retired. `docs/errors.md` documents each one, and a test
 * fails when a code is missing there.
 */
export const errorCodes = {
  KEEL_CONFIG_INVALID: 'The configuration passed to createKeel() failed validation.',
  KEEL_INVALID_TENANT: 'A tenant id is missing, malformed, too long or contains forbidden characters.',
  KEEL_TENANT_BUSY: 'The tenant already uses all the connections it may hold and none freed up in time.',
  KEEL_TENANT_SCHEMA_UNKNOWN: "In schema mode, the tenant's schema does not exist.",
  KEEL_TENANT_UNKNOWN: "An adapter's tenantExists() check said the request's tenant does not exist.",
  KEEL_RLS_BYPASS:
    'In rls mode, the runtime role is a superuser or has BYPASSRLS, so policies would not apply.',
  KEEL_QUERY_INVALID: 'A query was malformed, or tried transaction control outside db.transaction().',
  KEEL_PARSER_UNAVAILABLE:
    "Postgres' SQL parser (libpg-query, WebAssembly) could not be loaded, so no statement can be checked.",
  KEEL_TRANSACTION_CLOSED: 'A transaction handle was used after its transaction ended.',
  KEEL_TRANSACTION_ABORTED:
    'A transaction callback returned after a statement in it failed, so nothing was committed.',
  KEEL_POOL_TIMEOUT: 'No pooled connection to the database host became available within connectionTimeoutMs.',
  KEEL_DB_UNAVAILABLE:
    'keel could not open a connection to a Postgres host (refused, unreachable, timed out, or rejected the login).',
  KEEL_CACHE_OPTIONS_INVALID:
    'cached() or invalidate() got a missing or malformed key, tag, duration or loader.',
  KEEL_ABORTED: 'The caller aborted the operation through its AbortSignal.',
  KEEL_QUERY_TIMEOUT:
    'The host did not answer within statementTimeoutMs + timeoutGraceMs (or pool.queryTimeoutMs); keel closed the connection.',
  KEEL_NO_TENANT_CONTEXT: 'keel.current() was called outside keel.run().',
  KEEL_CLOSED: 'keel.close() was called; the instance takes no more work.',
  KEEL_JOBS_UNAVAILABLE:
    'The jobs Redis did not answer or failed a command (enqueue, jobStatus, deadLetters, redrive, the outbox relay); `cause` holds the driver error.',
  KEEL_JOBS_NOT_CONFIGURED: 'A jobs call was made but createKeel() got no jobs.redis configuration.',
  KEEL_JOB_INVALID: 'defineJob() or startWorker() got a malformed name, schema, handler or option.',
  KEEL_JOB_TIMEOUT: 'A job attempt ran longer than its timeoutMs; the attempt failed (and may be retried).',
  KEEL_UNKNOWN_JOB: 'A job name that was never defined with keel.defineJob() (jobs capability).',
  KEEL_JOB_PAYLOAD_INVALID: "A job payload failed its job's zod schema (jobs capability).",
} as const

export type KeelErrorCode = keyof typeof errorCodes

export interface KeelErrorOptions {
  cause?: unknown
  /** Structured context (tenant id, field path, limits); never secrets. */
  details?: Readonly<Record<string, unknown>>
}

// One brand for every copy of keel in a process: the ESM and CJS builds (or two installed versions)
// each define their own KeelError class, so `instanceof` alone would fail across them, and an adapter
// built against one copy would answer 500 for another copy's KEEL_TENANT_BUSY.
const BRAND: unique symbol = Symbol.for('keel.KeelError') as never

export class KeelError extends Error {
  override readonly name = 'KeelError'
  readonly code: KeelErrorCode
  readonly details: Readonly<Record<string, unknown>>
  readonly [BRAND] = true

  constructor(code: KeelErrorCode, message: string, options: KeelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.details = Object.freeze({ ...options.details })
  }

  /** `instanceof KeelError` holds for a KeelError of any copy of keel loaded in this process. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true
  }
}

export function isKeelError(value: unknown, code?: KeelErrorCode): value is KeelError {
  return value instanceof KeelError && (code === undefined || value.code === code)
}
