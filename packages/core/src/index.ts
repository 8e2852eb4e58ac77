export { createKeel, Keel } from './keel.js'
export type { Health, HostHealth } from './keel.js'
export type { KeelConfig, ResolvedConfig, Logger, TenantLimitsOverride } from './config/config-schema.js'
export { KeelError, errorCodes, isKeelError } from './errors.js'
export type { KeelErrorCode, KeelErrorOptions } from './errors.js'
export { TenantClient } from './client/tenant-client.js'
export { Transaction } from './client/transaction.js'
export type {
  IsolationLevel,
  QueryOptions,
  QueryResult,
  Queryable,
  TransactionOptions,
} from './client/query-types.js'
export { applyRlsPolicy, rlsPolicySql } from './tenancy/rls-policy.js'
export type { RlsPolicyOptions, SqlRunner, SqlRunnerPool } from './tenancy/rls-policy.js'
