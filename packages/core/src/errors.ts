/**
 * Every error keel raises is a `KeelError` with a stable `code`, named subject first:
 * `KEEL_<SUBJECT>_<WHAT HAPPENED>` (ADR 0029). Codes are never reused; a code renamed to follow that
 * rule keeps its old name working (`renamedErrorCodes`, at the end of this table). `docs/errors.md`
 * documents each one, and a test fails when a code is missing there.
 */
const currentCodes = {
  KEEL_CONFIG_INVALID: 'The configuration passed to createKeel() failed validation.',
  KEEL_TENANT_INVALID: 'A tenant id is missing, malformed, too long or contains forbidden characters.',
  KEEL_TENANT_BUSY: 'The tenant already uses all the connections it may hold and none freed up in time.',
  KEEL_TENANT_SCHEMA_UNKNOWN: "In schema mode, the tenant's schema does not exist.",
  KEEL_TENANT_UNKNOWN:
    "An adapter's tenantExists() check, or (database mode) tenancy.resolve, said the tenant does not exist.",
  KEEL_TENANT_RESOLVE_FAILED:
    'In database mode, tenancy.resolve threw, hung past resolveTimeoutMs or returned an invalid placement.',
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
    'keel could not open a connection to a Postgres host (refused, unreachable, timed out, or rejected the login), or refused at once a call needing a primary found down (details.reason primary_down).',
  KEEL_CACHE_OPTIONS_INVALID:
    'cached() or invalidate() got a missing or malformed key, tag, duration or loader.',
  KEEL_ABORTED: 'The caller aborted the operation through its AbortSignal.',
  KEEL_QUERY_TIMEOUT:
    'The host did not answer within statementTimeoutMs + timeoutGraceMs (or pool.queryTimeoutMs), or the connection was lost under the statement; keel closed the connection.',
  KEEL_NO_TENANT_CONTEXT: 'keel.current() was called outside keel.run().',
  KEEL_CLOSED: 'keel.close() was called; the instance takes no more work.',
  KEEL_JOBS_UNAVAILABLE:
    'The jobs Redis did not answer or failed a command (enqueue, jobStatus, deadLetters, redrive, the outbox relay); `cause` holds the driver error.',
  KEEL_JOBS_NOT_CONFIGURED: 'A jobs call was made but createKeel() got no jobs.redis configuration.',
  KEEL_JOB_INVALID: 'defineJob() or startWorker() got a malformed name, schema, handler or option.',
  KEEL_JOB_TIMEOUT: 'A job attempt ran longer than its timeoutMs; the attempt failed (and may be retried).',
  KEEL_JOB_UNKNOWN: 'A job name that was never defined with keel.defineJob() (jobs capability).',
  KEEL_JOB_PAYLOAD_INVALID: "A job payload failed its job's zod schema (jobs capability).",
  KEEL_EXPORT_SINK_FAILED:
    "An export job's sink could not be made or failed while writing; the attempt failed and its transaction ended.",
} as const

/**
 * Old name → current name. An error is always raised under its current name; the old one is still
 * accepted wherever a code is asked about (`isKeelError(e, code)`, `e.is(code)`) and stays in
 * `errorCodes`. Comparing `e.code === 'KEEL_INVALID_TENANT'` no longer matches: TypeScript flags it.
 */
export const renamedErrorCodes = {
  KEEL_INVALID_TENANT: 'KEEL_TENANT_INVALID',
  KEEL_UNKNOWN_JOB: 'KEEL_JOB_UNKNOWN',
} as const satisfies Readonly<Record<string, keyof typeof currentCodes>>

/** The code of every error keel raises (current names only). */
export type KeelErrorCode = keyof typeof currentCodes
/** A code's name before ADR 0029: still accepted where a code is asked about. */
export type RenamedKeelErrorCode = keyof typeof renamedErrorCodes

/** Every code with its description; renamed codes are listed under their old names too. */
export const errorCodes: Readonly<Record<KeelErrorCode | RenamedKeelErrorCode, string>> = {
  ...currentCodes,
  KEEL_INVALID_TENANT:
    'Renamed KEEL_TENANT_INVALID (ADR 0029); still accepted by isKeelError() and err.is().',
  KEEL_UNKNOWN_JOB: 'Renamed KEEL_JOB_UNKNOWN (ADR 0029); still accepted by isKeelError() and err.is().',
}

/** The current name of a code, whether given its current or its old name. */
export function currentErrorCode(code: KeelErrorCode | RenamedKeelErrorCode): KeelErrorCode
export function currentErrorCode(code: string): string
export function currentErrorCode(code: string): string {
  return Object.hasOwn(renamedErrorCodes, code) ? renamedErrorCodes[code as RenamedKeelErrorCode] : code
}

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

  constructor(code: KeelErrorCode, message: string, options?: KeelErrorOptions)
  /** @deprecated A renamed code (ADR 0029): the error is raised under its current name. */
  constructor(code: RenamedKeelErrorCode, message: string, options?: KeelErrorOptions)
  constructor(code: KeelErrorCode | RenamedKeelErrorCode, message: string, options?: KeelErrorOptions)
  constructor(code: KeelErrorCode | RenamedKeelErrorCode, message: string, options: KeelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = currentErrorCode(code)
    this.details = Object.freeze({ ...options.details })
  }

  /** Whether this error has `code`; a renamed code's old name matches too. */
  is(code: KeelErrorCode): boolean
  /** @deprecated A renamed code (ADR 0029): use its current name. */
  is(code: RenamedKeelErrorCode): boolean
  is(code: KeelErrorCode | RenamedKeelErrorCode): boolean
  is(code: KeelErrorCode | RenamedKeelErrorCode): boolean {
    return currentErrorCode(this.code) === currentErrorCode(code)
  }

  /** `instanceof KeelError` holds for a KeelError of any copy of keel loaded in this process. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true
  }
}

/**
 * Whether `value` is a KeelError (of any copy of keel in the process), with `code` when given. An
 * error from an older copy still carrying a renamed code matches its current name, and the reverse.
 */
export function isKeelError(value: unknown, code?: KeelErrorCode): value is KeelError
/** @deprecated A renamed code (ADR 0029): use its current name. */
export function isKeelError(value: unknown, code: RenamedKeelErrorCode): value is KeelError
export function isKeelError(value: unknown, code?: KeelErrorCode | RenamedKeelErrorCode): value is KeelError
export function isKeelError(value: unknown, code?: KeelErrorCode | RenamedKeelErrorCode): value is KeelError {
  return (
    value instanceof KeelError &&
    (code === undefined || currentErrorCode(value.code) === currentErrorCode(code))
  )
}
