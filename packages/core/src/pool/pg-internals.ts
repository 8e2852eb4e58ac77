import pg from 'pg'

/**
 * The slice of node-postgres internals keel's one-round-trip scoping relies on (pg 8.x). @types/pg
 * does not declare them; they have been stable across pg 8 and are covered by the test suite, which
 * runs against the pinned pg version.
 */
export interface PgConnection {
  parsedStatements: Record<string, string>
  stream: { cork?: () => void; uncork?: () => void }
  parse(msg: { text: string; name?: string; types?: unknown[] }): void
  bind(msg: { statement?: string; portal?: string; values?: readonly unknown[]; valueMapper?: unknown }): void
  execute(msg: { portal?: string; rows?: number }): void
  close(msg: { type: 'S' | 'P'; name: string }): void
}

export interface PgQueryInternals {
  text: string
  name: string | undefined
  callback: ((err: Error | null, result?: unknown) => void) | undefined
  prepare(connection: PgConnection): void
  handleRowDescription(msg: unknown): void
  handleDataRow(msg: unknown): void
  handleCommandComplete(msg: unknown, connection: PgConnection): void
  handleEmptyQuery(connection: PgConnection): void
  handleError(err: Error, connection: PgConnection): void
  handleReadyForQuery(connection: PgConnection): void
}

export type PgQueryConstructor = new (config: {
  text: string
  values?: readonly unknown[]
  rowMode?: 'array'
  types?: unknown
}) => PgQueryInternals

export const PgQuery = pg.Query as unknown as PgQueryConstructor
