import type { ParseNode } from './sql-parser.js'

/** Isolation, access mode and deferrability of a transaction, as BEGIN / SET TRANSACTION give them. */
export interface TransactionModes {
  isolationLevel?: 'read committed' | 'repeatable read' | 'serializable'
  readOnly?: boolean
  deferrable?: boolean
}

/**
 * A transaction control statement, read from Postgres' own parse tree (never from a regex over the
 * text): what the pg.Pool facade maps onto keel's transactions (ADR 0031). `unsupported` ones (two-phase
 * commit, AND CHAIN) have no keel equivalent and are refused with `reason`.
 */
export type TransactionCommand =
  | { readonly kind: 'begin'; readonly modes: TransactionModes }
  | { readonly kind: 'set'; readonly modes: TransactionModes }
  | { readonly kind: 'commit' }
  | { readonly kind: 'rollback' }
  | { readonly kind: 'savepoint' | 'release' | 'rollback_to'; readonly name: string }
  | { readonly kind: 'unsupported'; readonly reason: string }

const SAVEPOINT_KINDS = {
  TRANS_STMT_SAVEPOINT: 'savepoint',
  TRANS_STMT_RELEASE: 'release',
  TRANS_STMT_ROLLBACK_TO: 'rollback_to',
} as const

const CHAIN = 'COMMIT/ROLLBACK AND CHAIN is not supported through keel; end the transaction and BEGIN again'
const TWO_PHASE =
  'two-phase commit (PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED) is not supported through keel'

/** The command of one parsed statement, or undefined when it is not transaction control. */
export function transactionCommand(statement: ParseNode): TransactionCommand | undefined {
  const set = statement.VariableSetStmt as { kind?: string; name?: string; args?: ParseNode[] } | undefined
  if (set !== undefined) {
    if (set.kind !== 'VAR_SET_MULTI' || set.name?.toLowerCase() !== 'transaction') return undefined
    return { kind: 'set', modes: modesOf(set.args) }
  }
  const stmt = statement.TransactionStmt as
    | { kind?: string; options?: ParseNode[]; savepoint_name?: string; chain?: boolean }
    | undefined
  if (stmt === undefined) return undefined
  switch (stmt.kind) {
    case 'TRANS_STMT_BEGIN':
    case 'TRANS_STMT_START':
      return { kind: 'begin', modes: modesOf(stmt.options) }
    case 'TRANS_STMT_COMMIT':
      return stmt.chain === true ? { kind: 'unsupported', reason: CHAIN } : { kind: 'commit' }
    case 'TRANS_STMT_ROLLBACK':
      return stmt.chain === true ? { kind: 'unsupported', reason: CHAIN } : { kind: 'rollback' }
    case 'TRANS_STMT_SAVEPOINT':
    case 'TRANS_STMT_RELEASE':
    case 'TRANS_STMT_ROLLBACK_TO':
      return { kind: SAVEPOINT_KINDS[stmt.kind], name: stmt.savepoint_name ?? '' }
    default:
      return { kind: 'unsupported', reason: TWO_PHASE }
  }
}

function modesOf(options: ParseNode[] | undefined): TransactionModes {
  const modes: TransactionModes = {}
  for (const option of options ?? []) {
    const def = option.DefElem as { defname?: string; arg?: ParseNode } | undefined
    const value = def?.arg?.A_Const as { sval?: { sval?: string }; ival?: { ival?: number } } | undefined
    switch (def?.defname) {
      case 'transaction_isolation': {
        const level = value?.sval?.sval?.toLowerCase()
        // Postgres runs READ UNCOMMITTED as READ COMMITTED.
        modes.isolationLevel =
          level === 'serializable' || level === 'repeatable read' ? level : 'read committed'
        break
      }
      case 'transaction_read_only':
        modes.readOnly = (value?.ival?.ival ?? 0) !== 0
        break
      case 'transaction_deferrable':
        modes.deferrable = (value?.ival?.ival ?? 0) !== 0
        break
    }
  }
  return modes
}
