import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MigrateError } from '../errors.js'
import { isNonTransactional, type ParsedStatement, parseSql } from '../sql/parse-sql.js'
import { loadModuleMigration, type ModuleMigration } from './module-migration.js'

export type MigrationKind = 'shared' | 'tenant'

/** One migration file, parsed once per run. */
export interface Migration {
  /** The file name without its extension: `0003_orders_customer_idx`. The ledger's key. */
  id: string
  kind: MigrationKind
  file: string
  /** The file's text (SQL, or the JS/TS source of a module migration). */
  sql: string
  /** sha256 of the file's bytes: an applied file that changes is an error (KEEL_MIGRATION_CHECKSUM_MISMATCH). */
  checksum: string
  statements: ParsedStatement[]
  /** Holds a statement Postgres refuses inside a transaction: run statement by statement, resumably. */
  nonTransactional: boolean
  /** A .js/.mjs/.ts migration (`export async function up(ctx)`): imported when it first runs (ADR 0047). */
  load?: () => Promise<ModuleMigration>
}

const NAME = /^(\d+)_([a-z0-9_-]+)\.(sql|js|mjs|ts)$/i

/** The migrations of `dir/<kind>/`, in order. A missing folder has none. */
export async function readMigrations(dir: string, kind: MigrationKind): Promise<Migration[]> {
  const folder = join(dir, kind)
  let names: string[]
  try {
    names = await readdir(folder)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
  const files = names.filter((n) => !n.startsWith('.') && !n.endsWith('.md'))
  const bad = files.filter((n) => !NAME.test(n))
  if (bad.length > 0) {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${folder}: ${bad.join(', ')} not named NNNN_name.sql|.js|.mjs|.ts (digits, an underscore, letters/digits/_/-)`,
      { details: { files: bad } },
    )
  }
  const sorted = files.sort((a, b) => {
    const na = BigInt(NAME.exec(a)![1]!)
    const nb = BigInt(NAME.exec(b)![1]!)
    return na === nb ? a.localeCompare(b) : na < nb ? -1 : 1
  })
  const migrations: Migration[] = []
  const seen = new Map<string, string>()
  for (const name of sorted) {
    const file = join(folder, name)
    const sql = await readFile(file, 'utf8')
    const id = name.slice(0, name.lastIndexOf('.'))
    const twin = seen.get(id)
    if (twin !== undefined) {
      // One ledger id per migration: 0003_x.sql and 0003_x.js would both claim '0003_x'.
      throw new MigrateError(
        'KEEL_MIGRATION_INVALID',
        `${folder}: ${twin} and ${name} have the same id ${id}`,
        {
          details: { files: [twin, name] },
        },
      )
    }
    seen.set(id, name)
    migrations.push(
      name.endsWith('.sql')
        ? await parseMigration(id, kind, file, sql)
        : moduleMigration(id, kind, file, sql),
    )
  }
  return migrations
}

/** A .js/.mjs/.ts migration: checksummed from its text like SQL; imported (once) only when it runs. */
function moduleMigration(id: string, kind: MigrationKind, file: string, text: string): Migration {
  const checksum = createHash('sha256').update(text).digest('hex')
  let loaded: Promise<ModuleMigration> | undefined
  return {
    id,
    kind,
    file,
    sql: text,
    checksum,
    statements: [],
    nonTransactional: false,
    load: () => {
      loaded ??= loadModuleMigration(file, checksum)
      return loaded
    },
  }
}

export async function parseMigration(
  id: string,
  kind: MigrationKind,
  file: string,
  sql: string,
): Promise<Migration> {
  const statements = await parseSql(sql, file)
  const control = statements.find((s) => s.type === 'TransactionStmt')
  if (control !== undefined) {
    // keel owns the transaction (and its lock_timeout, and the ledger row written inside it).
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${file}:${control.line}: transaction control (${control.text.slice(0, 20)}) in a migration: keel runs each migration in its own transaction; remove it`,
      { details: { file, line: control.line } },
    )
  }
  const nonTransactional = statements.some(isNonTransactional)
  const unnamed = statements.find(
    (s) => s.type === 'IndexStmt' && s.node.concurrent === true && !s.node.idxname,
  )
  if (unnamed !== undefined) {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${file}:${unnamed.line}: CREATE INDEX CONCURRENTLY needs an index name, so that a build killed half-way can be found and redone`,
      { details: { file, line: unnamed.line } },
    )
  }
  return {
    id,
    kind,
    file,
    sql,
    checksum: createHash('sha256').update(sql).digest('hex'),
    statements,
    nonTransactional,
  }
}
