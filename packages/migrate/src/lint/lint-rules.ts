import { cmds, type ParsedStatement, type ParseNode, relationName } from '../sql/parse-sql.js'

/** What a rule sees: one statement, and the file around it. */
export interface LintContext {
  /** Tables created earlier in the same file: locking them hurts nobody, they are empty and unseen. */
  createdHere: Set<string>
  /** Inside a hand-written BEGIN ... COMMIT, and whether it set lock_timeout yet. */
  inTransaction: boolean
  transactionSetsLockTimeout: boolean
}

export interface LintRule {
  id: string
  /** Why the statement hurts a busy table. */
  message: string
  /** What to write instead. */
  fix: string
  check(statement: ParsedStatement, context: LintContext): boolean
}

// Functions whose value differs per row: ADD COLUMN ... DEFAULT f() rewrites the whole table under
// ACCESS EXCLUSIVE (a constant or stable default is stored once in the catalog since Postgres 11).
const VOLATILE = new Set([
  'random',
  'gen_random_uuid',
  'uuid_generate_v1',
  'uuid_generate_v4',
  'clock_timestamp',
  'timeofday',
  'nextval',
  'txid_current',
  'gen_random_bytes',
])

function onExistingTable(statement: ParsedStatement, context: LintContext): boolean {
  const name = relationName(statement.node.relation)
  return name !== undefined && !context.createdHere.has(name)
}

function alterCmd(statement: ParsedStatement, context: LintContext, test: (cmd: ParseNode) => boolean) {
  return (
    statement.type === 'AlterTableStmt' &&
    onExistingTable(statement, context) &&
    cmds(statement.node).some(test)
  )
}

function constraintOf(cmd: ParseNode): ParseNode | undefined {
  return cmd.subtype === 'AT_AddConstraint' ? (cmd.def as { Constraint?: ParseNode })?.Constraint : undefined
}

function funcNames(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const child of node) funcNames(child, out)
  else if (node !== null && typeof node === 'object') {
    const call = (node as { FuncCall?: { funcname?: Array<{ String?: { sval?: string } }> } }).FuncCall
    if (call?.funcname) out.push(call.funcname.at(-1)?.String?.sval ?? '')
    for (const child of Object.values(node)) funcNames(child, out)
  }
  return out
}

export const lintRules: readonly LintRule[] = [
  {
    id: 'require-concurrent-index',
    message: 'CREATE INDEX without CONCURRENTLY blocks every write to the table for the whole build.',
    fix: 'CREATE INDEX CONCURRENTLY name ON ... in a migration of its own (keel runs it outside a transaction).',
    check: (s, c) => s.type === 'IndexStmt' && s.node.concurrent !== true && onExistingTable(s, c),
  },
  {
    id: 'concurrent-index-unnamed',
    message:
      'A concurrent index without a name cannot be found again if its build is killed, so it cannot be resumed.',
    fix: 'Name the index: CREATE INDEX CONCURRENTLY orders_customer_idx ON orders (customer_id).',
    check: (s) => s.type === 'IndexStmt' && s.node.concurrent === true && s.node.idxname === undefined,
  },
  {
    id: 'constraint-missing-not-valid',
    message:
      'Adding a FOREIGN KEY or CHECK constraint scans the whole table while holding a lock that blocks writes (a foreign key locks the referenced table too).',
    fix: 'ADD CONSTRAINT ... NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT ... in a later migration (it takes only SHARE UPDATE EXCLUSIVE).',
    check: (s, c) =>
      alterCmd(s, c, (cmd) => {
        const con = constraintOf(cmd)
        return (
          (con?.contype === 'CONSTR_FOREIGN' || con?.contype === 'CONSTR_CHECK') &&
          con.skip_validation !== true
        )
      }),
  },
  {
    id: 'unique-constraint-without-index',
    message:
      'ADD UNIQUE / PRIMARY KEY builds its index under ACCESS EXCLUSIVE: reads and writes wait for the build.',
    fix: 'CREATE UNIQUE INDEX CONCURRENTLY name ON ...; then ALTER TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX name.',
    check: (s, c) =>
      alterCmd(s, c, (cmd) => {
        const con = constraintOf(cmd)
        return (
          (con?.contype === 'CONSTR_UNIQUE' || con?.contype === 'CONSTR_PRIMARY') &&
          con.indexname === undefined
        )
      }),
  },
  {
    id: 'set-not-null',
    message:
      'SET NOT NULL scans the whole table under ACCESS EXCLUSIVE unless a validated CHECK (col IS NOT NULL) exists.',
    fix: 'ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c; then SET NOT NULL (Postgres 12+ skips the scan) and drop c.',
    check: (s, c) => alterCmd(s, c, (cmd) => cmd.subtype === 'AT_SetNotNull'),
  },
  {
    id: 'alter-column-type',
    message:
      'ALTER COLUMN ... TYPE rewrites the table and its indexes under ACCESS EXCLUSIVE (except a few binary-compatible changes).',
    fix: 'Add a new column, backfill it in batches, switch the code over, then drop the old column (expand/contract).',
    check: (s, c) => alterCmd(s, c, (cmd) => cmd.subtype === 'AT_AlterColumnType'),
  },
  {
    id: 'add-column-volatile-default',
    message:
      'ADD COLUMN with a volatile DEFAULT (random(), gen_random_uuid(), clock_timestamp(), nextval()) rewrites every row under ACCESS EXCLUSIVE.',
    fix: 'ADD COLUMN without the default (or with a constant one), SET DEFAULT for new rows, then backfill existing rows in batches.',
    check: (s, c) =>
      alterCmd(s, c, (cmd) => {
        if (cmd.subtype !== 'AT_AddColumn') return false
        const constraints =
          ((cmd.def as { ColumnDef?: ParseNode })?.ColumnDef?.constraints as unknown[]) ?? []
        return constraints.some((k) => {
          const con = (k as { Constraint?: ParseNode }).Constraint
          return con?.contype === 'CONSTR_DEFAULT' && funcNames(con.raw_expr).some((f) => VOLATILE.has(f))
        })
      }) ||
      alterCmd(
        s,
        c,
        (cmd) => cmd.subtype === 'AT_AddColumn' && JSON.stringify(cmd.def).includes('"CONSTR_IDENTITY"'),
      ),
  },
  {
    id: 'transaction-without-lock-timeout',
    message:
      'A hand-written transaction runs DDL without SET LOCAL lock_timeout: if it waits for a lock, every query on the table queues behind it.',
    fix: "Let keel wrap the migration (drop BEGIN/COMMIT), or start with SET LOCAL lock_timeout = '500ms'.",
    check: (s, c) =>
      c.inTransaction &&
      !c.transactionSetsLockTimeout &&
      ['AlterTableStmt', 'IndexStmt', 'RenameStmt', 'DropStmt', 'CreateTrigStmt'].includes(s.type),
  },
  {
    id: 'rename-breaks-running-code',
    message:
      'Renaming a table or column breaks the application code still running against the old name during the deploy.',
    fix: 'Expand/contract: add the new name (a column, or a view for a table), deploy code using it, then drop the old one.',
    check: (s) =>
      s.type === 'RenameStmt' &&
      ['OBJECT_TABLE', 'OBJECT_COLUMN'].includes(String(s.node.renameType)) &&
      (s.node.renameType === 'OBJECT_TABLE' || s.node.relationType === 'OBJECT_TABLE'),
  },
  {
    id: 'drop-breaks-running-code',
    message: 'Dropping a table or column breaks the application code that still reads it during the deploy.',
    fix: 'Deploy code that no longer uses it first; drop it in a later release.',
    check: (s, c) =>
      (s.type === 'DropStmt' && s.node.removeType === 'OBJECT_TABLE') ||
      alterCmd(s, c, (cmd) => cmd.subtype === 'AT_DropColumn'),
  },
]
