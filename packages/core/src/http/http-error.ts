import { currentErrorCode, errorCodes, isKeelError, type KeelErrorCode } from '../errors.js'

/**
 * The HTTP status each KeelError code answers with in the adapters. A `Record` over every code, so a new
 * code does not compile until someone decides its status. 4xx: the request itself was wrong (the tenant
 * it names); 503: try again later or elsewhere; 500: the application or its configuration is wrong.
 */
const STATUS: Readonly<Record<KeelErrorCode, number>> = {
  KEEL_TENANT_INVALID: 400,
  KEEL_TENANT_UNKNOWN: 404,
  KEEL_TENANT_SCHEMA_UNKNOWN: 404,
  KEEL_TENANT_BUSY: 503,
  KEEL_TENANT_RESOLVE_FAILED: 503,
  KEEL_POOL_TIMEOUT: 503,
  KEEL_DB_UNAVAILABLE: 503,
  KEEL_QUERY_TIMEOUT: 503,
  KEEL_JOBS_UNAVAILABLE: 503,
  KEEL_CLOSED: 503,
  KEEL_CONFIG_INVALID: 500,
  KEEL_RLS_BYPASS: 500,
  KEEL_QUERY_INVALID: 500,
  KEEL_PARSER_UNAVAILABLE: 500,
  KEEL_TRANSACTION_CLOSED: 500,
  KEEL_TRANSACTION_ABORTED: 500,
  KEEL_CACHE_OPTIONS_INVALID: 500,
  KEEL_ABORTED: 500,
  KEEL_NO_TENANT_CONTEXT: 500,
  KEEL_JOBS_NOT_CONFIGURED: 500,
  KEEL_JOB_INVALID: 500,
  KEEL_JOB_TIMEOUT: 500,
  KEEL_JOB_UNKNOWN: 500,
  KEEL_JOB_PAYLOAD_INVALID: 500,
  KEEL_EXPORT_SINK_FAILED: 500,
}

/** The body every adapter answers a KeelError with. */
export interface HttpErrorBody {
  /** A KeelError's code; `REQUEST_INVALID` / `INTERNAL_ERROR` for other errors (safeHttpError). */
  error: { code: KeelErrorCode | 'REQUEST_INVALID' | 'INTERNAL_ERROR'; message: string }
}

export interface HttpErrorResponse {
  status: number
  headers: Readonly<Record<string, string>>
  body: HttpErrorBody
}

/** The HTTP status for a KeelError (see the table in docs/adapters.md); undefined for anything else. */
export function httpStatusFor(error: unknown): number | undefined {
  return isKeelError(error) ? STATUS[currentErrorCode(error.code)] : undefined
}

/**
 * What an adapter sends for a KeelError, or undefined for any other error (that stays the framework's
 * own to handle). 4xx bodies carry keel's message, which is about the request; 5xx bodies carry only the
 * code's fixed description, so nothing internal (hosts, SQL, details) reaches the client.
 */
export function httpErrorFor(error: unknown): HttpErrorResponse | undefined {
  if (!isKeelError(error)) return undefined
  // An error from an older copy of keel may still carry a renamed code: answer under the current name.
  const code = currentErrorCode(error.code)
  const status = STATUS[code]
  const message = status < 500 ? error.message : errorCodes[code]
  const headers: Record<string, string> = {}
  if (code === 'KEEL_TENANT_BUSY') headers['retry-after'] = String(retryAfterSeconds(error.details))
  return { status, headers, body: { error: { code, message } } }
}

/** Retry-After is whole seconds: round the limiter's hint up, and never tell a client to retry at once. */
function retryAfterSeconds(details: Readonly<Record<string, unknown>>): number {
  const ms = details.retryAfterMs
  return typeof ms === 'number' && Number.isFinite(ms) ? Math.max(1, Math.ceil(ms / 1_000)) : 1
}
