/**
 * Errors raised by @keel/migrate. Named like @keel/core's (`KEEL_<SUBJECT>_<WHAT HAPPENED>`, ADR 0029) and
 * documented in docs/migrate.md#errors (a test checks). They live here rather than in core's table so the
 * migrator does not depend on @keel/core: it runs as the owner, often from a deploy job without the app.
 */
export const migrateErrorCodes = {
  KEEL_MIGRATE_CONFIG_INVALID:
    'createMigrator() options or keel.config failed validation, or no config was found.',
  KEEL_MIGRATION_INVALID:
    'A migration file is malformed: a bad file name, SQL that does not parse, transaction control, an unnamed concurrent index, a JS/TS module that cannot be imported, or a misused ctx.backfill.',
  KEEL_MIGRATION_CHECKSUM_MISMATCH: 'An applied migration file changed on disk since it was applied.',
  KEEL_MIGRATION_LOCK_TIMEOUT:
    'A statement kept failing on lock_timeout (55P03) past maxLockWaitMs; details.blockers says who held the lock.',
  KEEL_MIGRATION_FAILED:
    'A migration statement failed in one scope (shared or one tenant); cause holds the Postgres error.',
  KEEL_MIGRATE_SCOPE_BUSY:
    'Another runner held the scope (shared or one tenant) for longer than scopeLockWaitMs.',
  KEEL_MIGRATE_TENANCY_UNSUPPORTED:
    'The operation does not apply to the tenancy mode (tenant migrations or provisioning in rls mode).',
  KEEL_MIGRATE_TENANT_UNKNOWN:
    'In database mode, tenancy.resolve(id) returned null for a tenant of the fleet.',
  KEEL_MIGRATE_DEPROVISION_MODE_REQUIRED:
    "deprovision() was called without { mode: 'archive' } or { mode: 'drop' }: it never guesses.",
} as const

export type MigrateErrorCode = keyof typeof migrateErrorCodes

export interface MigrateErrorOptions {
  cause?: unknown
  /** Structured context (tenant, migration, blockers); never secrets. */
  details?: Readonly<Record<string, unknown>>
}

export class MigrateError extends Error {
  override readonly name = 'MigrateError'
  readonly code: MigrateErrorCode
  readonly details: Readonly<Record<string, unknown>>

  constructor(code: MigrateErrorCode, message: string, options: MigrateErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.details = Object.freeze({ ...options.details })
  }
}

/** Whether `value` is a MigrateError, with `code` when given. */
export function isMigrateError(value: unknown, code?: MigrateErrorCode): value is MigrateError {
  return value instanceof MigrateError && (code === undefined || value.code === code)
}
