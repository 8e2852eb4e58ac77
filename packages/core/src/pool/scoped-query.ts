import { type PgConnection, PgQuery } from './pg-internals.js'
import { fixedStatementName, StatementCache } from './statement-cache.js'

/** A statement sent in the same batch as the caller's, before it (prelude) or after it (postlude). */
export interface Prelude {
  /**
   * Present: the statement is prepared once per connection (a label; it is prepared under the hash of
   * its text, see statementName). Absent: parsed every time.
   */
  readonly name?: string
  readonly text: string
  readonly values?: readonly unknown[]
  /**
   * Ends the transaction (COMMIT): what follows it in the batch may run after the commit, so it is sent
   * unnamed. A missing or duplicate name (behind a transaction pooler) can then only fail the batch
   * before anything committed, which is what makes retrying such a failure safe.
   */
  readonly ends?: boolean
}

/**
 * How pg builds the caller's rows: `rowMode: 'array'` (pg's own array rows, so columns of the same name
 * all survive) and per-query `types` (else the client's, which fall back to the global `pg.types`).
 */
export interface RowShape {
  readonly rowMode?: 'array' | undefined
  readonly types?:
    | { getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown }
    | undefined
}

interface DataRowMessage {
  fields: Array<string | null>
}

interface CommandCompleteMessage {
  text: string
}

/**
 * A pg Submittable that sends its preludes (BEGIN, the tenant scope), the caller's statement and its
 * postludes (COMMIT, a WAL position) in one batch before a single Sync: one round trip, and the
 * scope's transaction-local settings live exactly as long as the implicit (or explicit) transaction.
 * Preludes and postludes are executed without Describe, so they produce DataRow and CommandComplete
 * messages only: their first row is kept in `preludeRows`/`postludeRows` and their command tags in
 * `preludeTags`, and the rest is swallowed; the caller's statement is handled by pg's own Query.
 */
export class ScopedQuery extends PgQuery {
  readonly #preludes: readonly Prelude[]
  readonly #postludes: readonly Prelude[]
  readonly #cacheSize: number
  #cache: StatementCache | undefined
  /** Statements sent under a name in this batch: an error naming one of them is about that name. */
  readonly names: string[] = []
  /** Set once a statement that ends the transaction is sent: the rest of the batch goes unnamed. */
  #ended = false
  /** Preludes still to complete; then the caller's statement (mainDone); then postludes. */
  #pending: number
  #mainDone = false
  #postDone = 0
  /** Index of the prelude that failed, when one did. */
  failedPrelude = -1
  readonly preludeRows: Array<Array<string | null> | undefined> = []
  readonly preludeTags: string[] = []
  readonly postludeRows: Array<Array<string | null> | undefined> = []

  /**
   * @param cacheSize statements kept prepared per connection; 0 sends every statement (and prelude)
   *   unnamed, for poolers that cannot track named statements.
   */
  constructor(
    text: string,
    values: readonly unknown[] | undefined,
    preludes: readonly Prelude[],
    cacheSize: number,
    postludes: readonly Prelude[] = [],
    shape?: RowShape,
  ) {
    // Text and values as pg's own (text, values) form when there is no row shape: pg copies a config
    // object with its property descriptors on every construction (2% of keel's CPU per statement).
    super(
      shape === undefined
        ? text
        : {
            text,
            ...(values === undefined ? {} : { values }),
            ...(shape.rowMode === undefined ? {} : { rowMode: shape.rowMode }),
            ...(shape.types === undefined ? {} : { types: shape.types }),
          },
      shape === undefined ? values : undefined,
    )
    this.#preludes = preludes
    this.#postludes = postludes
    this.#pending = preludes.length
    this.#cacheSize = cacheSize
  }

  /** True when the batch opens a transaction (a BEGIN prelude): failed, it leaves one to roll back. */
  get opensTransaction(): boolean {
    return this.#preludes.some((p) => /^\s*BEGIN\b/i.test(p.text))
  }

  submit(connection: PgConnection): Error | null {
    if (typeof this.text !== 'string') return new Error('A query must have text.')
    const caching = this.#cacheSize > 0
    const afterEnd = this.#preludes.some((p) => p.ends === true)
    if (caching && !afterEnd && StatementCache.cacheable(this.text)) {
      this.#cache = StatementCache.of(connection, this.#cacheSize)
      this.name = this.#cache.nameFor(this.text)
    }
    connection.stream.cork?.()
    try {
      if (caching) StatementCache.of(connection, this.#cacheSize).flushCloses(connection)
      for (const prelude of this.#preludes) this.#sendSide(connection, prelude, caching)
      if (this.name !== undefined) this.names.push(this.name)
      // Always the extended protocol: it is what lets the batch share one Sync, and it refuses
      // several statements in one string, which keeps a caller from smuggling in a COMMIT.
      // pg's prepare() ends in _getRows(), overridden below to add the postludes before the Sync.
      this.prepare(connection)
    } finally {
      connection.stream.uncork?.()
    }
    return null
  }

  #sendSide(connection: PgConnection, statement: Prelude, caching: boolean): void {
    const name =
      caching && !this.#ended && statement.name !== undefined ? fixedStatementName(statement.text) : ''
    if (statement.ends === true) this.#ended = true
    if (name !== '') this.names.push(name)
    if (name === '' || connection.parsedStatements[name] === undefined) {
      connection.parse({ text: statement.text, name })
      // Recorded now: a Parse of fixed, valid text cannot fail on its own, and a backend that dies
      // takes the connection (and this record) with it.
      if (name !== '') connection.parsedStatements[name] = statement.text
    }
    connection.bind({ statement: name, values: statement.values ?? [] })
    connection.execute({ portal: '' })
  }

  /** pg's Query: Execute of the caller's portal, then Sync. The postludes go in between. */
  _getRows(connection: PgConnection & { sync(): void }, rows: number | undefined): void {
    connection.execute({ portal: '', rows: rows ?? 0 })
    for (const postlude of this.#postludes) this.#sendSide(connection, postlude, this.#cacheSize > 0)
    connection.sync()
  }

  override handleDataRow(msg: unknown): void {
    if (this.#pending > 0) {
      const index = this.#preludes.length - this.#pending
      this.preludeRows[index] ??= (msg as DataRowMessage).fields
    } else if (this.#mainDone) {
      this.postludeRows[this.#postDone] ??= (msg as DataRowMessage).fields
    } else super.handleDataRow(msg)
  }

  override handleCommandComplete(msg: unknown, connection: PgConnection): void {
    if (this.#pending > 0) {
      this.preludeTags.push((msg as CommandCompleteMessage).text)
      this.#pending--
    } else if (this.#mainDone) {
      this.#postDone++
    } else {
      this.#mainDone = true
      super.handleCommandComplete(msg, connection)
    }
  }

  override handleEmptyQuery(connection: PgConnection): void {
    if (this.#pending === 0 && !this.#mainDone) {
      this.#mainDone = true
      super.handleEmptyQuery(connection)
    }
  }

  override handleError(err: Error, connection: PgConnection): void {
    if (this.#pending > 0) this.failedPrelude = this.#preludes.length - this.#pending
    // Whatever failed, the statement may not exist (or its plan went stale): prepare it afresh next time.
    this.#cache?.forget(this.text, connection)
    super.handleError(err, connection)
  }

  /**
   * True when the batch failed because a name it used is missing (26000) or already taken (42P05) on
   * the server: behind a transaction pooler, the server connection is not the one this client prepared
   * on. Only errors naming one of this batch's own statements count (a tenant's SQL-level PREPARE can
   * raise the same codes; its name is not keel's). Nothing ran: the name is checked at Parse or Bind,
   * before the statement, and no name follows a COMMIT in a batch.
   */
  static isLostStatement(error: unknown, query: ScopedQuery | undefined): boolean {
    const e = error as { code?: string; message?: string } | null
    if (query === undefined || (e?.code !== '26000' && e?.code !== '42P05')) return false
    const message = e.message ?? ''
    return query.names.some((name) => message.includes(name))
  }

  /** True when the server refused a cached plan whose result shape changed under it (DDL). */
  static isStalePlan(error: unknown): boolean {
    const e = error as { code?: string; message?: string } | null
    return e?.code === '0A000' && /cached plan must not change result type/.test(e.message ?? '')
  }
}
