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
  WhenPrimaryDown,
} from './client/query-types.js'
export type { ExportOptions, StreamOptions } from './client/read-session.js'
export { TenantClient } from './client/tenant-client.js'
export type { Transaction } from './client/transaction.js'
export type {
  KeelConfig,
  Logger,
  ResolvedConfig,
  TenantConnections,
  TenantLimitsOverride,
} from './config/config-schema.js'
export type { TenantPlacement, TenantResolver } from './config/tenancy-schema.js'
export type { KeelErrorCode, KeelErrorOptions, RenamedKeelErrorCode } from './errors.js'
export { currentErrorCode, errorCodes, isKeelError, KeelError, renamedErrorCodes } from './errors.js'
// The HTTP kit adapters are built from lives at '@keel/core/http' (ADR 0029); users keep these two.
export type { HttpErrorBody, HttpErrorResponse } from './http/http-error.js'
export { httpErrorFor, httpStatusFor } from './http/http-error.js'
export type {
  ExportJobOptions,
  ExportJobPayload,
  ExportJobProgress,
  ExportJobResult,
  ExportSink,
  ExportSinkContext,
} from './jobs/export-job.js'
export { exportJob } from './jobs/export-job.js'
export { fileSink } from './jobs/file-sink.js'
export type { JobContext, JobDefinition } from './jobs/job-definition.js'
export type { EnqueueOptions, JobState, JobStatus, StartWorkerOptions } from './jobs/job-runtime.js'
export { JobWorker } from './jobs/job-worker.js'
export type { JobOutboxOptions } from './jobs/outbox.js'
export { applyJobOutbox, jobOutboxSql } from './jobs/outbox.js'
export type {
  DatabaseHealth,
  Degraded,
  Health,
  HostHealth,
  ReplicaHealth,
  ServerHealth,
  TenantOptions,
} from './keel.js'
export { createKeel, Keel } from './keel.js'
export type { HostConfig } from './pool/host-info.js'
export type { ExportProgressEvent } from './stream/export-stream.js'
export type { RlsPolicyOptions, SqlRunner, SqlRunnerPool } from './tenancy/rls-policy.js'
export { applyRlsPolicy, rlsPolicySql } from './tenancy/rls-policy.js'
