import { type PgConnection, PgQuery } from './pg-internals.js'
import { StatementCache } from './statement-cache.js'

export interface Prelude {
  /** Named statements are parsed once per connection; unnamed ones are parsed every time. */
  readonly name?: string
  readonly text: string
  readonly values?: readonly unknown[]
}

/**
 * A pg Submittable that sends its preludes (BEGIN, the tenant scope) and then the caller's statement
 * in one batch before a single Sync: one round trip, and the scope's transaction-local settings live
 * exactly as long as the implicit (or explicit) transaction. Preludes are executed without Describe,
 * so they produce DataRow and CommandComplete messages only, which are swallowed here; everything
 * after them belongs to the caller's statement and is handled by pg's own Query.
 */
export class ScopedQuery extends PgQuery {
  readonly #preludes: readonly Prelude[]
  readonly #cacheSize: number
  #cache: StatementCache | undefined
  #pending: number
  /** Index of the prelude that failed, when one did. */
  failedPrelude = -1

  /**
   * @param cacheSize statements kept prepared per connection; 0 sends every statement (and prelude)
   *   unnamed, for poolers that cannot track named statements.
   */
  constructor(
    text: string,
    values: readonly unknown[] | undefined,
    preludes: readonly Prelude[],
    cacheSize: number,
  ) {
    super(values === undefined ? { text } : { text, values })
    this.#preludes = preludes
    this.#pending = preludes.length
    this.#cacheSize = cacheSize
  }

  submit(connection: PgConnection): Error | null {
    if (typeof this.text !== 'string') return new Error('A query must have text.')
    const caching = this.#cacheSize > 0
    if (caching && StatementCache.cacheable(this.text)) {
      this.#cache = StatementCache.of(connection, this.#cacheSize)
      this.name = this.#cache.nameFor(this.text)
    }
    connection.stream.cork?.()
    try {
      if (caching) StatementCache.of(connection, this.#cacheSize).flushCloses(connection)
      for (const prelude of this.#preludes) {
        const name = caching ? (prelude.name ?? '') : ''
        if (name === '' || connection.parsedStatements[name] === undefined) {
          connection.parse({ text: prelude.text, name })
          // Recorded now: a Parse of fixed, valid text cannot fail on its own, and a backend that dies
          // takes the connection (and this record) with it.
          if (name !== '') connection.parsedStatements[name] = prelude.text
        }
        connection.bind({ statement: name, values: prelude.values ?? [] })
        connection.execute({ portal: '' })
      }
      // Always the extended protocol: it is what lets the batch share one Sync, and it refuses
      // several statements in one string, which keeps a caller from smuggling in a COMMIT.
      this.prepare(connection)
    } finally {
      connection.stream.uncork?.()
    }
    return null
  }

  override handleDataRow(msg: unknown): void {
    if (this.#pending === 0) super.handleDataRow(msg)
  }

  override handleCommandComplete(msg: unknown, connection: PgConnection): void {
    if (this.#pending > 0) {
      this.#pending--
      return
    }
    super.handleCommandComplete(msg, connection)
  }

  override handleEmptyQuery(connection: PgConnection): void {
    if (this.#pending === 0) super.handleEmptyQuery(connection)
  }

  override handleError(err: Error, connection: PgConnection): void {
    if (this.#pending > 0) this.failedPrelude = this.#preludes.length - this.#pending
    // Whatever failed, the statement may not exist (or its plan went stale): prepare it afresh next time.
    this.#cache?.forget(this.text, connection)
    super.handleError(err, connection)
  }

  /** True when the server refused a cached plan whose result shape changed under it (DDL). */
  static isStalePlan(error: unknown): boolean {
    const e = error as { code?: string; message?: string } | null
    return e?.code === '0A000' && /cached plan must not change result type/.test(e.message ?? '')
  }
}
