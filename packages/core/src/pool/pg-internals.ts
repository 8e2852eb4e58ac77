import pg from 'pg'

/**
 * Everything keel uses of node-postgres beyond its documented API, in one place (ADR 0028): the
 * extended-protocol calls behind the one-round-trip scoping (ScopedQuery), the per-connection record of
 * prepared statements (StatementCache), the socket (client-side deadlines), the backend key and pg's
 * Connection class (CancelRequest). @types/pg declares none of it. The supported pg range is the peer
 * range in package.json; test/pg-internals.test.ts checks every shape below against the installed pg and
 * fails loudly when a pg release changes one, and scripts/consumer-check.mjs runs the lowest and the
 * highest pg of the range.
 */

/** A pg Client's protocol connection (`client.connection`): what keel writes to directly. */
export interface PgConnection {
  parsedStatements: Record<string, string>
  stream: { cork?: () => void; uncork?: () => void; destroy?: () => void }
  parse(msg: { text: string; name?: string; types?: unknown[] }): void
  bind(msg: { statement?: string; portal?: string; values?: readonly unknown[]; valueMapper?: unknown }): void
  execute(msg: { portal?: string; rows?: number }): void
  close(msg: { type: 'S' | 'P'; name: string }): void
}

/** pg's Query (a Submittable), as ScopedQuery subclasses it. */
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

export type PgQueryConstructor = new (
  config: string | { text: string; values?: readonly unknown[]; rowMode?: 'array'; types?: unknown },
  values?: readonly unknown[],
) => PgQueryInternals

export const PgQuery = pg.Query as unknown as PgQueryConstructor

/** The methods of pg's Query that ScopedQuery overrides or calls (`_getRows` ends `prepare` with Sync). */
export const PG_QUERY_METHODS = [
  'prepare',
  '_getRows',
  'handleRowDescription',
  'handleDataRow',
  'handleCommandComplete',
  'handleEmptyQuery',
  'handleError',
  'handleReadyForQuery',
] as const

/** The protocol connection of a connected pg client. */
export function connectionOf(client: pg.ClientBase): PgConnection & { sync(): void } {
  return (client as unknown as { connection: PgConnection & { sync(): void } }).connection
}

/**
 * The transaction status (I, T, E) of the client's last ReadyForQuery, or undefined while one is still
 * due. pg rejects a statement at its ErrorResponse, before the ReadyForQuery that follows it updates
 * getTransactionStatus(): until then that still says what it said before the batch (I before a BEGIN),
 * and when the two messages arrive in separate reads (load, a pooler in between) the caller's error
 * handling runs in that gap. `readyForQuery` is pg's own flag for "the server is waiting for us".
 */
export function settledTransactionStatus(client: pg.ClientBase): string | undefined {
  const c = client as unknown as { readyForQuery?: boolean; getTransactionStatus(): string | null }
  return c.readyForQuery === true ? (c.getTransactionStatus() ?? undefined) : undefined
}

/**
 * Calls `then` once the client's pending ReadyForQuery has arrived (pg's own handler has run: the status
 * is current), or its connection ended or failed, or `timeoutMs` passed, whichever comes first.
 */
export function whenSettled(client: pg.ClientBase, timeoutMs: number, then: () => void): void {
  const connection = (client as unknown as { connection: NodeJS.EventEmitter }).connection
  let done = false
  const finish = () => {
    if (done) return
    done = true
    clearTimeout(timer)
    connection.removeListener('readyForQuery', finish)
    connection.removeListener('end', finish)
    connection.removeListener('error', finish)
    then()
  }
  // Listeners added now run after pg's own (added at connect), so the status is updated by then.
  connection.on('readyForQuery', finish).on('end', finish).on('error', finish)
  const timer = setTimeout(finish, timeoutMs)
  timer.unref()
}

/** The backend key Postgres sent at startup (BackendKeyData), and where the client connected. */
export interface BackendKey {
  readonly processID: number | undefined
  readonly secretKey: number | undefined
  readonly host: string | undefined
  readonly port: number | undefined
}

export function backendKeyOf(client: pg.ClientBase): BackendKey {
  const c = client as unknown as Partial<BackendKey>
  return { processID: c.processID, secretKey: c.secretKey, host: c.host, port: c.port }
}

/** pg's own Connection, used bare to send a CancelRequest on a new socket. */
export interface PgCancelConnection {
  stream: { setTimeout(ms: number, listener: () => void): void; destroy(): void; unref(): void }
  on(event: string, listener: (...args: unknown[]) => void): void
  connect(port: number, host: string): void
  cancel(processID: number, secretKey: number): void
  end(): void
}

export function newCancelConnection(): PgCancelConnection {
  return new (pg as unknown as { Connection: new () => PgCancelConnection }).Connection()
}

/** pg-pool's pool, as the connection governor resizes it and takes idle connections back. */
interface PgPoolInternals {
  options: { max: number }
  _idle: Array<{ client: pg.PoolClient }>
  _remove(client: pg.PoolClient, callback?: () => void): void
}

/**
 * Sets how many connections pg-pool may open: it reads `options.max` each time it decides whether to
 * open one (`_isFull`), so a governed pool grows and shrinks with the permits it holds (ADR 0033).
 */
export function setPoolMax(pool: pg.Pool, max: number): void {
  ;(pool as unknown as PgPoolInternals).options.max = max
}

/**
 * Closes the pool's longest-idle connection (pg-pool keeps idle clients oldest first and hands out the
 * newest), as its own idle timeout does; `closed` runs once the connection has ended. False when none
 * is idle.
 */
export function evictIdleClient(pool: pg.Pool, closed: () => void): boolean {
  const internals = pool as unknown as PgPoolInternals
  const oldest = internals._idle[0]
  if (oldest === undefined) return false
  internals._remove(oldest.client, closed)
  return true
}
