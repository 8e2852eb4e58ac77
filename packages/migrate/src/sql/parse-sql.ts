import { loadModule, parseSync } from 'libpg-query'
import { MigrateError } from '../errors.js'

/** A parse tree node as libpg-query returns it: JSON objects keyed by node type. */
export type ParseNode = Record<string, unknown>

/** One statement of a file: its node type, tree, own text and 1-based line where it starts. */
export interface ParsedStatement {
  type: string
  node: ParseNode
  text: string
  line: number
}

let loading: Promise<void> | undefined

/** Loads Postgres' own parser (libpg-query, WebAssembly) once per process. */
export function loadParser(): Promise<void> {
  loading ??= loadModule().catch((error: unknown) => {
    loading = undefined
    throw error
  })
  return loading
}

/**
 * The statements of `sql`, split by Postgres' grammar (so a `;` inside a string, a dollar-quoted body or a
 * comment never splits). libpg-query's locations are UTF-8 byte offsets, hence the Buffer slicing.
 */
export async function parseSql(sql: string, file = '<sql>'): Promise<ParsedStatement[]> {
  await loadParser()
  let tree: { stmts?: Array<{ stmt?: ParseNode; stmt_location?: number; stmt_len?: number }> }
  try {
    tree = parseSync(sql) as typeof tree
  } catch (error) {
    throw new MigrateError('KEEL_MIGRATION_INVALID', `${file}: ${(error as Error).message}`, {
      cause: error,
      details: { file },
    })
  }
  const bytes = Buffer.from(sql, 'utf8')
  return (tree.stmts ?? []).map((s) => {
    const start = s.stmt_location ?? 0
    const end = s.stmt_len === undefined || s.stmt_len === 0 ? bytes.length : start + s.stmt_len
    const raw = bytes.subarray(start, end).toString('utf8')
    // The statement's text starts after the previous `;`: leading blank lines and comments belong to it.
    const leading = raw.length - raw.trimStart().length
    const before = bytes.subarray(0, start).toString('utf8') + raw.slice(0, leading)
    const node = s.stmt ?? {}
    return {
      type: Object.keys(node)[0] ?? 'Unknown',
      node: (Object.values(node)[0] ?? {}) as ParseNode,
      text: raw.trim(),
      line: before.split('\n').length,
    }
  })
}

/** Whether Postgres refuses to run the statement inside a transaction block. */
export function isNonTransactional(statement: ParsedStatement): boolean {
  const n = statement.node
  switch (statement.type) {
    case 'IndexStmt':
    case 'DropStmt':
      return n.concurrent === true
    case 'ReindexStmt':
      return hasOption(n.params, 'concurrently')
    case 'VacuumStmt':
    case 'CreatedbStmt':
    case 'DropdbStmt':
    case 'AlterSystemStmt':
    case 'CreateTableSpaceStmt':
    case 'DropTableSpaceStmt':
    case 'CreateSubscriptionStmt':
    case 'DropSubscriptionStmt':
      return true
    case 'AlterTableStmt':
      // ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY
      return cmds(n).some((c) =>
        c.subtype === 'AT_DetachPartition' && (c.def as ParseNode | undefined)?.PartitionCmd !== undefined
          ? (c.def as { PartitionCmd: ParseNode }).PartitionCmd.concurrent === true
          : false,
      )
    default:
      return false
  }
}

export function hasOption(params: unknown, name: string): boolean {
  return (
    Array.isArray(params) &&
    params.some((p) => (p as { DefElem?: { defname?: string } }).DefElem?.defname === name)
  )
}

/** The AlterTableCmd nodes of an AlterTableStmt. */
export function cmds(node: ParseNode): ParseNode[] {
  const list = (node.cmds as Array<{ AlterTableCmd?: ParseNode }> | undefined) ?? []
  return list.map((c) => c.AlterTableCmd ?? {})
}

/** `schema.name` or `name` of a RangeVar node. */
export function relationName(relation: unknown): string | undefined {
  const r = relation as { relname?: string; schemaname?: string } | undefined
  if (r?.relname === undefined) return undefined
  return r.schemaname === undefined ? r.relname : `${r.schemaname}.${r.relname}`
}
