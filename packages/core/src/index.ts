export type { CacheApi } from './cache/cache-client.js'
export type { CachedOptions, InvalidateOptions } from './cache/cached-options.js'
export type {
  Consistency,
  CustomTypesConfig,
  FieldDef,
  IsolationLevel,
  QueryArrayConfig,
  QueryArrayResult,
  Queryable,
  QueryConfig,
  QueryOptions,
  QueryResult,
  TransactionOptions,
} from './client/query-types.js'
export { TenantClient } from './client/tenant-client.js'
export type { Transaction } from './client/transaction.js'
export type { KeelConfig, Logger, ResolvedConfig, TenantLimitsOverride } from './config/config-schema.js'
export type { KeelErrorCode, KeelErrorOptions } from './errors.js'
export { errorCodes, isKeelError, KeelError } from './errors.js'
export { consistencyHeaders, consistencySetCookie, consistencyTokenFrom } from './http/consistency-carrier.js'
export type { HttpErrorBody, HttpErrorResponse } from './http/http-error.js'
export { httpErrorFor, httpStatusFor } from './http/http-error.js'
export type {
  ConsistencyCookieOptions,
  ConsistencyOptions,
  HealthOptions,
  HttpRequestView,
  KeelHttpOptions,
  ResolvedCookie,
  ResolvedHttpOptions,
  TenantSource,
} from './http/http-options.js'
export { resolveHttpOptions } from './http/http-options.js'
export type { HttpServerSpanInput } from './http/http-server-span.js'
export { HttpServerSpan, httpTracer } from './http/http-server-span.js'
export type { ReadinessBody } from './http/readiness.js'
export { LIVENESS_BODY, readiness } from './http/readiness.js'
export { safeHttpError } from './http/safe-http-error.js'
export type { TenantOutcome } from './http/tenant-from-request.js'
export { tenantFromRequest } from './http/tenant-from-request.js'
export type { JobContext, JobDefinition } from './jobs/job-definition.js'
export type { EnqueueOptions, JobState, JobStatus, StartWorkerOptions } from './jobs/job-runtime.js'
export { JobWorker } from './jobs/job-worker.js'
export type { JobOutboxOptions } from './jobs/outbox.js'
export { applyJobOutbox, jobOutboxSql } from './jobs/outbox.js'
export type { Health, HostHealth, ReplicaHealth, TenantOptions } from './keel.js'
export { createKeel, Keel } from './keel.js'
export type { RlsPolicyOptions, SqlRunner, SqlRunnerPool } from './tenancy/rls-policy.js'
export { applyRlsPolicy, rlsPolicySql } from './tenancy/rls-policy.js'
