import { type ParsedStatement, parseSql, relationName } from '../sql/parse-sql.js'
import { type LintContext, lintRules } from './lint-rules.js'

/** One finding: the rule, why it hurts, the safe alternative and the statement's 1-based line. */
export interface LintFinding {
  rule: string
  message: string
  fix: string
  line: number
}

// `-- keel:allow rule-id[, rule-id]` anywhere in the file accepts those findings on purpose (an empty
// table, a maintenance window). A comment, so Postgres ignores it.
const ALLOW = /--\s*keel:allow\s+([a-z0-9,\s-]+)/g

/**
 * The statements of `sql` that take long locks on, or rewrite, a busy table. Parsed with Postgres' own
 * grammar (libpg-query), never with regexes. SQL that does not parse raises KEEL_MIGRATION_INVALID.
 */
export async function lintSql(sql: string, options: { file?: string } = {}): Promise<LintFinding[]> {
  const statements = await parseSql(sql, options.file)
  return lintStatements(statements, sql)
}

export function lintStatements(statements: readonly ParsedStatement[], sql: string): LintFinding[] {
  const allowed = new Set(
    [...sql.matchAll(ALLOW)].flatMap((m) => (m[1] ?? '').split(/[\s,]+/).filter((r) => r.length > 0)),
  )
  const context: LintContext = {
    createdHere: new Set(),
    inTransaction: false,
    transactionSetsLockTimeout: false,
  }
  const findings: LintFinding[] = []
  for (const statement of statements) {
    track(statement, context)
    for (const rule of lintRules) {
      if (allowed.has(rule.id) || !rule.check(statement, context)) continue
      findings.push({ rule: rule.id, message: rule.message, fix: rule.fix, line: statement.line })
    }
  }
  return findings
}

function track(statement: ParsedStatement, context: LintContext): void {
  const n = statement.node
  if (statement.type === 'CreateStmt' || statement.type === 'CreateTableAsStmt') {
    const name = relationName(n.relation ?? (n.into as { rel?: unknown } | undefined)?.rel)
    if (name !== undefined) context.createdHere.add(name)
  } else if (statement.type === 'TransactionStmt') {
    if (n.kind === 'TRANS_STMT_BEGIN' || n.kind === 'TRANS_STMT_START') {
      context.inTransaction = true
      context.transactionSetsLockTimeout = false
    } else if (n.kind === 'TRANS_STMT_COMMIT' || n.kind === 'TRANS_STMT_ROLLBACK') {
      context.inTransaction = false
    }
  } else if (statement.type === 'VariableSetStmt' && n.name === 'lock_timeout') {
    context.transactionSetsLockTimeout = true
  }
}
