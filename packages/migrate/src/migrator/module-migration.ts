import { extname } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { ClientBase } from 'pg'
import { MigrateError } from '../errors.js'
import type { BackfillOptions, BackfillResult } from './backfill.js'

/**
 * What `up(ctx)` of a .js/.mjs/.ts migration gets: its scope, a connection already placed in it, and the
 * helpers that keep long work safe (ADR 0047).
 */
export interface MigrationContext {
  /** The tenant being migrated, or null for a shared/ migration. */
  readonly tenant: string | null
  /** The ledger scope: 'shared', 'schema:<name>' or 'database'. */
  readonly scope: string
  /** The tenant's schema (schema mode, or a database placement with isolation 'schema'); undefined otherwise. */
  readonly schema: string | undefined
  /** The migration id (file name without extension). */
  readonly migration: string
  /**
   * A connection in the scope: search_path is the tenant's schema (then sharedSchemas), lock_timeout is
   * set. With `transaction` true (the default) it is inside the migration's transaction, which also writes
   * the ledger row; with `export const transaction = false` it is a plain session (autocommit).
   */
  readonly client: ClientBase
  /** Whether up() runs inside the migration's one transaction. */
  readonly inTransaction: boolean
  /**
   * Runs `fn` in a short transaction of its own (lock_timeout and statement_timeout set, retried on
   * lock_timeout). In a transactional migration it runs `fn` in the migration's transaction.
   */
  transaction<T>(fn: (client: ClientBase) => Promise<T>): Promise<T>
  /**
   * Updates a table in keyset batches, each its own short transaction, bounded to the rows present at its
   * start, resumable, throttled by replica replay lag (docs/migrate.md#backfills). Only in a migration
   * with `export const transaction = false`.
   */
  backfill(options: BackfillOptions): Promise<BackfillResult>
  /** A line for the person running the migration (the CLI prints it; onEvent gets a 'log' event). */
  log(message: string): void
}

/** What a migration module exports. */
export interface ModuleMigration {
  up: (ctx: MigrationContext) => Promise<void> | void
  /** One transaction with the ledger row (default), or a plain session for long work (backfills). */
  transaction: boolean
}

/**
 * Imports a migration module with the process's own loader: .js/.mjs always, .ts only when this Node strips
 * types (22.6+ with the flag, 22.18+ by default) or the app runs under a loader (tsx, vitest). No transform
 * is bundled (ADR 0047). The checksum in the URL makes a file changed on disk load again in the same
 * process instead of coming from the module cache.
 */
export async function loadModuleMigration(file: string, checksum: string): Promise<ModuleMigration> {
  let mod: Record<string, unknown>
  try {
    mod = (await import(`${pathToFileURL(file).href}?sha256=${checksum.slice(0, 16)}`)) as Record<
      string,
      unknown
    >
  } catch (error) {
    const code = (error as { code?: string }).code
    const ts = extname(file) === '.ts'
    const hint =
      ts && (code === 'ERR_UNKNOWN_FILE_EXTENSION' || code === 'ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING')
        ? `: Node ${process.versions.node} cannot import TypeScript; run keel on Node 22.18+ (or 22.6+ with --experimental-strip-types), under a loader (node --import tsx), or write the migration as .mjs`
        : `: ${(error as Error).message}`
    throw new MigrateError('KEEL_MIGRATION_INVALID', `could not load ${file}${hint}`, {
      cause: error,
      details: { file, code },
    })
  }
  const up = mod.up ?? (mod.default as Record<string, unknown> | undefined)?.up
  const transaction = mod.transaction ?? (mod.default as Record<string, unknown> | undefined)?.transaction
  if (typeof up !== 'function') {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${file} must export \`async function up(ctx)\` (found ${typeof up})`,
      { details: { file } },
    )
  }
  if (transaction !== undefined && typeof transaction !== 'boolean') {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${file}: \`export const transaction\` must be true or false (found ${typeof transaction})`,
      { details: { file } },
    )
  }
  return { up: up as ModuleMigration['up'], transaction: transaction ?? true }
}
