import { LRUCache } from 'lru-cache'
import { PURE_FUNCTIONS } from './pure-functions.js'
import { type ParseNode, parseStatements } from './sql-parser.js'
import { type TransactionCommand, transactionCommand } from './transaction-command.js'

/**
 * What running a statement may leave on its connection, decided from Postgres' own parse tree:
 * - `plain`: nothing; it runs as it always did, with no extra protocol message.
 * - `opaque`: it may run arbitrary code (DO, CALL, a function not known to be pure) or takes a session
 *   advisory lock: it runs between BEGIN and COMMIT; after COMMIT the settings are reset, session
 *   advisory locks released, and a probe decides whether the connection can be reused.
 * - `retire`: it certainly leaves a temp object: it runs, and its connection is destroyed afterwards
 *   instead of going back to the pool.
 * - `refuse`: it can only leave session state (or forge keel's own settings): KEEL_QUERY_INVALID.
 */
export type SessionEffect = 'plain' | 'opaque' | 'retire' | 'refuse'

export interface StatementClass {
  readonly effect: SessionEffect
  /**
   * When the only reason a statement is opaque is that it calls functions keel does not know (lower
   * case, `schema.name` when the call is qualified): the app may declare them safe
   * (`postgres.safeFunctions`), and the statement is then plain for that keel instance.
   */
  readonly functions?: readonly string[]
  /** Why a `refuse` statement is refused, and what to do instead. */
  readonly refusal?: string
  /**
   * A lone transaction control statement (BEGIN, SET TRANSACTION, COMMIT, SAVEPOINT...): refused in
   * db.query, mapped onto keel's transactions by the pg.Pool facade's clients (ADR 0031).
   */
  readonly control?: TransactionCommand
}

const PLAIN: StatementClass = Object.freeze({ effect: 'plain' })
const OPAQUE: StatementClass = Object.freeze({ effect: 'opaque' })
const RETIRE: StatementClass = Object.freeze({ effect: 'retire' })

// Classes are keyed by text, like the statement cache: an app sends a bounded set of texts. The
// bound is in characters so that a few huge generated texts cannot hold megabytes; a text longer than
// one entry may be is classified on every call (a parse costs about a tenth of its round trip).
const classes = new LRUCache<string, StatementClass>({
  maxSize: 4_000_000,
  maxEntrySize: 100_000,
  sizeCalculation: (_value, key) => key.length + 64,
})

export const TRANSACTION_CONTROL =
  'transaction control is not allowed in db.query(); use db.transaction(async (tx) => ...) and tx.transaction() for savepoints'
export const SESSION_SETTING =
  'a session-level SET/RESET would outlive this call on a pooled connection; use SET LOCAL (or set_config(name, value, true)) inside db.transaction()'
const RESERVED_SETTING = 'settings named keel.* are reserved for keel itself'
const SET_CONFIG =
  'set_config() needs a literal setting name and true as its third argument (transaction-local); a session-level setting would outlive this call'
const PG_SETTINGS = 'writing pg_settings changes session settings; use SET LOCAL inside db.transaction()'
const PREPARED =
  'SQL-level PREPARE/EXECUTE/DEALLOCATE would outlive this call on a pooled connection; keel prepares and caches statements itself'
const DISCARD =
  'DISCARD would drop the statements keel prepared on this pooled connection; nothing to do instead'
const LISTEN =
  'LISTEN/UNLISTEN would keep this pooled connection subscribed for the next tenant; listen on a dedicated pg.Client'
const HOLD_CURSOR =
  'a cursor WITH HOLD outlives its transaction on a pooled connection; use a cursor without HOLD inside db.transaction(), or db.stream()'
const LOAD = 'LOAD changes the backend for whoever uses this pooled connection next'

// DeclareCursorStmt.options: CURSOR_OPT_HOLD (src/include/nodes/parsenodes.h).
const CURSOR_OPT_HOLD = 0x20

function refuse(refusal: string): StatementClass {
  return Object.freeze({ effect: 'refuse', refusal })
}

/** The class of one statement text, cached by text. Text Postgres' grammar refuses is opaque. */
export function statementClass(text: string): StatementClass {
  let found = classes.get(text)
  if (found === undefined) {
    found = classify(text)
    classes.set(text, found)
  }
  return found
}

function classify(text: string): StatementClass {
  const statements = parseStatements(text)
  // Postgres will report the syntax error itself; until it has, nothing is known of the text.
  if (statements === undefined) return OPAQUE
  const control = statements.length === 1 ? transactionCommand(statements[0]!) : undefined
  if (control !== undefined) {
    // SET TRANSACTION is allowed inside db.transaction() (it is transaction-local); the rest is refused.
    const found: StatementClass =
      control.kind === 'set'
        ? { effect: 'plain', control }
        : { effect: 'refuse', refusal: TRANSACTION_CONTROL, control }
    return Object.freeze(found)
  }
  const found = new Findings()
  for (const statement of statements) found.statement(statement)
  if (found.refusal !== undefined) return refuse(found.refusal)
  if (found.retire) return RETIRE
  if (found.opaque) return OPAQUE
  return found.calls.size > 0 ? Object.freeze({ effect: 'opaque', functions: [...found.calls] }) : PLAIN
}

/**
 * The effect of a statement for a keel instance that declared `safe` functions: opaque only because of
 * calls to functions all declared safe is plain. An entry `name` covers the name in any schema;
 * `schema.name` only that qualified call.
 */
export function effectWith(found: StatementClass, safe: ReadonlySet<string>): SessionEffect {
  if (found.functions === undefined || safe.size === 0) return found.effect
  for (const fn of found.functions) {
    if (safe.has(fn)) continue
    const dot = fn.lastIndexOf('.')
    if (dot < 0 || !safe.has(fn.slice(dot + 1))) return found.effect
  }
  return 'plain'
}

/** Walks a parse tree once, noting what each node may leave behind; the worst finding wins. */
class Findings {
  refusal: string | undefined
  retire = false
  opaque = false
  /** Functions keel does not know to be pure: opaque unless the app declared them safe. */
  readonly calls = new Set<string>()
  #ddl = false

  statement(statement: ParseNode): void {
    const type = Object.keys(statement)[0] ?? ''
    this.#ddl = !DML.has(type)
    this.#walk(statement)
  }

  #refuse(message: string): void {
    this.refusal ??= message
  }

  #walk(node: unknown): void {
    if (Array.isArray(node)) {
      for (const item of node) this.#walk(item)
      return
    }
    if (node === null || typeof node !== 'object') return
    for (const [key, value] of Object.entries(node as Record<string, unknown>)) {
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        this.#node(key, value as Record<string, unknown>)
      }
      this.#walk(value)
    }
  }

  #node(type: string, node: Record<string, unknown>): void {
    switch (type) {
      case 'TransactionStmt':
        this.#refuse(TRANSACTION_CONTROL)
        return
      case 'VariableSetStmt':
        this.#set(node)
        return
      case 'PrepareStmt':
      case 'ExecuteStmt':
      case 'DeallocateStmt':
        this.#refuse(PREPARED)
        return
      case 'DiscardStmt':
        this.#refuse(DISCARD)
        return
      case 'ListenStmt':
      case 'UnlistenStmt':
        this.#refuse(LISTEN)
        return
      case 'LoadStmt':
        this.#refuse(LOAD)
        return
      case 'DeclareCursorStmt':
        if ((Number(node.options ?? 0) & CURSOR_OPT_HOLD) !== 0) this.#refuse(HOLD_CURSOR)
        return
      case 'UpdateStmt':
      case 'InsertStmt':
      case 'MergeStmt':
        if (relationName(node.relation) === 'pg_settings') this.#refuse(PG_SETTINGS)
        return
      case 'DoStmt':
      case 'CallStmt':
        this.opaque = true
        return
      case 'FuncCall':
        this.#call(node)
        return
      case 'CreateStmt':
        // A temp table dropped at COMMIT dies with the statement's (or db.transaction's) transaction.
        if (typeof node.relation === 'object' && node.relation !== null) this.#judged.add(node.relation)
        if (isTemp(node.relation) && node.oncommit !== 'ONCOMMIT_DROP') this.retire = true
        return
      default:
        if ('rel' in node && 'onCommit' in node) {
          // An IntoClause: SELECT ... INTO TEMP, CREATE TEMP TABLE ... AS.
          if (typeof node.rel === 'object' && node.rel !== null) this.#judged.add(node.rel)
          if (isTemp(node.rel) && node.onCommit !== 'ONCOMMIT_DROP') this.retire = true
        } else if (this.#ddl && !this.#judged.has(node)) {
          // CREATE TEMP VIEW/SEQUENCE, or an object created in pg_temp by name (a function, a type).
          if (node.relpersistence === 't' || isTempSchema(node.schemaname)) this.retire = true
          if (type === 'String' && isTempSchema(node.sval)) this.retire = true
        }
    }
  }

  // Relations already judged with their ON COMMIT clause (the walk visits them after their parent).
  readonly #judged = new WeakSet<object>()

  #set(node: Record<string, unknown>): void {
    const name = String(node.name ?? '').toLowerCase()
    if (name.startsWith('keel.')) {
      this.#refuse(RESERVED_SETTING)
      return
    }
    if (node.is_local === true) {
      // A search_path that puts pg_temp first makes an unqualified CREATE TABLE temporary, and makes
      // later statements in the transaction resolve names elsewhere: the transaction gets the probe.
      if (name === 'search_path') this.opaque = true
      return
    }
    if (node.kind === 'VAR_SET_MULTI' && name === 'transaction') return
    this.#refuse(SESSION_SETTING)
  }

  #call(node: Record<string, unknown>): void {
    const names = (node.funcname as Array<{ String?: { sval?: string } }> | undefined) ?? []
    const parts = names.map((n) => n.String?.sval ?? '')
    const name = parts[parts.length - 1] ?? ''
    const schema = parts.length > 1 ? parts[0] : undefined
    if (schema !== undefined && schema !== 'pg_catalog') {
      this.calls.add(`${schema}.${name}`)
      return
    }
    if (name === 'set_config') {
      this.#setConfig(node)
      return
    }
    // A session advisory lock is opaque, not retire: the probe's pg_advisory_unlock_all() releases it
    // after COMMIT, which costs ~0.5 ms where a new connection costs ~70 ms under load (bench
    // session-guard). Unknown names are opaque too: fail safe.
    if (!PURE_FUNCTIONS.has(name)) this.calls.add(name)
  }

  #setConfig(node: Record<string, unknown>): void {
    const args = (node.args as ParseNode[] | undefined) ?? []
    const setting = stringConstant(args[0])
    if (setting === undefined || args.length !== 3 || !isTrue(args[2])) {
      this.#refuse(SET_CONFIG)
      return
    }
    const name = setting.toLowerCase()
    if (name.startsWith('keel.')) {
      this.#refuse(RESERVED_SETTING)
      return
    }
    if (name === 'search_path') this.opaque = true
  }
}

// Statements that create nothing: a pg_temp name in them reads a temp object, it does not make one.
const DML = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt'])

function relationName(relation: unknown): string | undefined {
  const rel = (relation as { relname?: string } | undefined)?.relname
  return rel?.toLowerCase()
}

function isTemp(relation: unknown): boolean {
  const rel = relation as { relpersistence?: string; schemaname?: string } | undefined
  return rel?.relpersistence === 't' || isTempSchema(rel?.schemaname)
}

function isTempSchema(name: unknown): boolean {
  return typeof name === 'string' && /^pg_temp/i.test(name)
}

function stringConstant(node: ParseNode | undefined): string | undefined {
  const constant = node?.A_Const as { sval?: { sval?: string } } | undefined
  return constant?.sval?.sval
}

function isTrue(node: ParseNode | undefined): boolean {
  const constant = node?.A_Const as { boolval?: { boolval?: boolean } } | undefined
  return constant?.boolval?.boolval === true
}
