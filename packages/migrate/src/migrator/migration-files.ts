import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MigrateError } from '../errors.js'
import { isNonTransactional, type ParsedStatement, parseSql } from '../sql/parse-sql.js'

export type MigrationKind = 'shared' | 'tenant'

/** One migration file, parsed once per run. */
export interface Migration {
  /** The file name without `.sql`: `0003_orders_customer_idx`. The ledger's key. */
  id: string
  kind: MigrationKind
  file: string
  sql: string
  /** sha256 of the file's bytes: an applied file that changes is an error (KEEL_MIGRATION_CHECKSUM_MISMATCH). */
  checksum: string
  statements: ParsedStatement[]
  /** Holds a statement Postgres refuses inside a transaction: run statement by statement, resumably. */
  nonTransactional: boolean
}

const NAME = /^(\d+)_([a-z0-9_-]+)\.sql$/i

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
      `${folder}: ${bad.join(', ')} not named NNNN_name.sql (digits, an underscore, letters/digits/_/-)`,
      { details: { files: bad } },
    )
  }
  const sorted = files.sort((a, b) => {
    const na = BigInt(NAME.exec(a)![1]!)
    const nb = BigInt(NAME.exec(b)![1]!)
    return na === nb ? a.localeCompare(b) : na < nb ? -1 : 1
  })
  const migrations: Migration[] = []
  for (const name of sorted) {
    const file = join(folder, name)
    const sql = await readFile(file, 'utf8')
    migrations.push(await parseMigration(name.slice(0, -4), kind, file, sql))
  }
  return migrations
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
