export type { KeelConfig, LoadConfigOptions, LoadedConfig } from './config/load-config.js'
export { loadConfig } from './config/load-config.js'
export type {
  Blocker,
  MigrateEvent,
  MigratorOptions,
  ResolvedTenantPlacement,
  TenancyOptions,
} from './config/migrator-options.js'
export { type DoctorResult, doctor } from './doctor/doctor.js'
export { DoctorError, type DoctorErrorCode } from './doctor/doctor-error.js'
export type { DoctorOptions, ResolvedPlacement } from './doctor/options.js'
export { type DoctorRule, doctorRules, type Finding, type Severity } from './doctor/rules.js'
export type { MigrateErrorCode, MigrateErrorOptions } from './errors.js'
export { isMigrateError, MigrateError, migrateErrorCodes } from './errors.js'
export type { LintContext, LintRule } from './lint/lint-rules.js'
export { lintRules } from './lint/lint-rules.js'
export type { LintFinding } from './lint/lint-sql.js'
export { lintSql } from './lint/lint-sql.js'
export type { BackfillOptions, BackfillResult } from './migrator/backfill.js'
export type { BackfillProgress } from './migrator/backfill-progress.js'
export type {
  FailedScope,
  Migrator,
  ScopeStatus,
  UpOptions,
  UpResult,
} from './migrator/create-migrator.js'
export { createMigrator } from './migrator/create-migrator.js'
export type { MigrationContext } from './migrator/module-migration.js'
export type { AppliedMigration } from './migrator/scope-runner.js'
export type { ProvisionOptions } from './migrator/tenant-lifecycle.js'
export type { ParsedStatement, ParseNode } from './sql/parse-sql.js'
