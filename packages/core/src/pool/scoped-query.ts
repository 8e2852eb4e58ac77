import { type PgConnection, PgQuery } from './pg-internals.js'

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
  #pending: number
  /** Index of the prelude that failed, when one did. */
  failedPrelude = -1

  constructor(text: string, values: readonly unknown[] | undefined, preludes: readonly Prelude[]) {
    super(values === undefined ? { text } : { text, values })
    this.#preludes = preludes
    this.#pending = preludes.length
  }

  submit(connection: PgConnection): Error | null {
    if (typeof this.text !== 'string') return new Error('A query must have text.')
    connection.stream.cork?.()
    try {
      for (const prelude of this.#preludes) {
        const name = prelude.name ?? ''
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
    super.handleError(err, connection)
  }
}
