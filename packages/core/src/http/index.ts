/**
 * `@keel/core/http`: the kit HTTP adapters are built from (@keel/express, @keel/fastify, or one for
 * another framework). Applications do not need it: they use an adapter, `db.consistencyToken` and
 * `keel.tenant(id, { consistencyToken })`, and `httpStatusFor` / `httpErrorFor` from the root (ADR 0029).
 */
export { consistencyHeaders, consistencySetCookie, consistencyTokenFrom } from './consistency-carrier.js'
export type {
  ConsistencyCookieOptions,
  ConsistencyOptions,
  HealthOptions,
  HttpRequestView,
  KeelHttpOptions,
  ResolvedCookie,
  ResolvedHttpOptions,
  TenantSource,
} from './http-options.js'
export { resolveHttpOptions } from './http-options.js'
export type { HttpServerSpanInput } from './http-server-span.js'
export { HttpServerSpan, httpTracer } from './http-server-span.js'
export type { ReadinessBody } from './readiness.js'
export { LIVENESS_BODY, readiness } from './readiness.js'
export { safeHttpError } from './safe-http-error.js'
export type { TenantOutcome } from './tenant-from-request.js'
export { tenantFromRequest } from './tenant-from-request.js'
