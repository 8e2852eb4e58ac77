import { EventEmitter } from 'node:events'
import pg from 'pg'
import type { DrivenTransaction } from '../client/driven-transaction.js'
import { toStatement } from '../client/query-config.js'
import type { QueryConfig, QueryResult } from '../client/query-types.js'
import { driveTransaction, type TenantClient } from '../client/tenant-client.js'
import { KeelError } from '../errors.js'
import { loadParser, parserLoaded } from '../sql/sql-parser.js'
import { SESSION_SETTING, statementClass } from '../sql/statement-class.js'
import type { TransactionCommand } from '../sql/transaction-command.js'
import { type Callback, commandResult, settle } from './pg-callback.js'

/** Finds the session a statement runs for: fixed (db.pgPool()) or keel.current() (keel.pgPool()). */
export type SessionSource = () => TenantClient

const ORM_SESSION_SETTING =
  "a session-level SET through keel's pg.Pool would outlive the statement on a pooled connection every tenant shares: turn off the ORM option that sends it (Knex `searchPath`), qualify names (or use tenancy mode 'schema'), set it for the role (ALTER ROLE ... SET), or use SET LOCAL inside a transaction"
const POOL_TRANSACTION =
  'transaction control through pool.query() would run on whichever connection it gets: take a client with pool.connect() and send BEGIN on it, or use db.transaction()'

/**
 * The parser's verdict on a statement sent through the facade: its transaction command, or undefined
 * for a plain statement (which db.query checks further). Session-level settings are refused here with
 * what an ORM user can do about them. Synchronous once the parser is loaded (the class is cached by
 * text): Kysely sends every statement through a lent client, so an await here was a promise hop per
 * statement for nothing (bench orms).
 */
export function controlOf(
  text: string,
): TransactionCommand | undefined | Promise<TransactionCommand | undefined> {
  if (!parserLoaded()) return loadParser().then(() => loadedControlOf(text))
  return loadedControlOf(text)
}

function loadedControlOf(text: string): TransactionCommand | undefined {
  const found = statementClass(text)
  if (found.refusal === SESSION_SETTING) {
    throw new KeelError('KEEL_QUERY_INVALID', ORM_SESSION_SETTING)
  }
  return found.control
}

/** pool.query(): one statement, keel's scoped one-round-trip query with replica routing. */
export function poolQuery(
  session: TenantClient,
  config: string | QueryConfig,
  values: readonly unknown[] | undefined,
): Promise<QueryResult> {
  try {
    const statement = toStatement(config, values)
    const control = controlOf(statement.text)
    if (control instanceof Promise) {
      return control.then((found) => {
        if (found !== undefined) throw new KeelError('KEEL_QUERY_INVALID', POOL_TRANSACTION)
        return session.query(config, values)
      })
    }
    if (control !== undefined) throw new KeelError('KEEL_QUERY_INVALID', POOL_TRANSACTION)
    return session.query(config, values)
  } catch (error) {
    return Promise.reject(error)
  }
}

/**
 * The client pool.connect() lends: it holds no connection. Outside a transaction each statement is
 * keel's routed query (a replica when the session allows); BEGIN opens a keel transaction lazily (see
 * DrivenTransaction) whose statements all run on its one pinned primary connection until COMMIT or
 * ROLLBACK. Statements run one at a time, in order, as on a pg.Client. release() in the middle of a
 * transaction rolls it back (release(error) retires its connection): never returned dirty.
 */
export class LentClient extends EventEmitter {
  /** pg.Client fields some ORMs read; this client has no backend of its own. */
  readonly processID = null
  readonly secretKey = null
  readonly #source: SessionSource
  #tx: DrivenTransaction | undefined
  /** The last statement (or release's rollback) queued: the next one starts after it settles. */
  #tail: Promise<unknown> = Promise.resolve()
  /**
   * Statements (and a release's rollback) started or waiting. At 0 the next statement starts at once
   * instead of behind #tail: the common case of one statement per connect(), as Kysely sends every one,
   * pays no promise hop for the ordering it does not need.
   */
  #busy = 0
  #released = false

  constructor(source: SessionSource) {
    super()
    this.#source = source
  }

  query(
    config: string | QueryConfig,
    values?: unknown,
    callback?: Callback<QueryResult>,
  ): Promise<QueryResult> | undefined
  query(
    config: string | QueryConfig,
    values?: unknown,
    callback?: unknown,
  ): Promise<QueryResult> | undefined {
    let params = values
    let done = callback as Callback<QueryResult> | undefined
    if (typeof params === 'function') {
      done = params as Callback<QueryResult>
      params = undefined
    }
    // The session of the caller's context, found now (keel.pgPool(): keel.current() at the call).
    let session: TenantClient | undefined
    let missing: unknown
    try {
      session = this.#source()
    } catch (error) {
      missing = error
    }
    const args = params as readonly unknown[] | undefined
    let result: Promise<QueryResult>
    if (this.#busy++ === 0) {
      result = this.#run(config, args, session, missing)
    } else {
      const run = () => this.#run(config, args, session, missing)
      result = this.#tail.then(run, run)
    }
    // Marked handled, as before: a caller that drops a failed statement's promise gets no unhandled rejection.
    this.#tail = result.catch(ignore)
    return settle(result, done)
  }

  async #run(
    config: string | QueryConfig,
    values: readonly unknown[] | undefined,
    session: TenantClient | undefined,
    missing: unknown,
  ): Promise<QueryResult> {
    // Counted in query(); done only once the statement settled (hence the awaits on each return), so a
    // statement sent meanwhile queues behind this one.
    try {
      const statement = toStatement(config, values)
      const rowMode = typeof config === 'object' ? config.rowMode : undefined
      const found = controlOf(statement.text)
      const control = found instanceof Promise ? await found : found
      const tx = this.#tx
      // Ending a transaction (a timer's ROLLBACK, say) only closes what its tenant opened; anything else
      // needs a tenant in context, and inside a transaction its own (keel.pgPool(): a client kept across
      // requests must not run one tenant's statement in another's transaction).
      const ending = tx !== undefined && (control?.kind === 'commit' || control?.kind === 'rollback')
      if (!ending) {
        if (session === undefined) throw missing
        if (tx !== undefined && session.tenantId !== tx.tenantId) {
          throw new KeelError(
            'KEEL_QUERY_INVALID',
            "this client's open transaction belongs to another tenant than the one in context; release the client at the end of each request",
            { details: { tenantId: session.tenantId } },
          )
        }
      }
      if (control === undefined)
        return await (tx !== undefined ? tx.query(config, values) : session!.query(config, values))
      switch (control.kind) {
        case 'begin':
          // Postgres warns and carries on when a transaction is already open; so does this.
          if (tx === undefined) this.#tx = driveTransaction(session!, control.modes)
          return commandResult('BEGIN', rowMode)
        case 'set':
          if (tx === undefined) return commandResult('SET', rowMode) // Postgres: a warning, no effect.
          if (tx.started) return await tx.query(config, values) // Postgres decides (25001 after a query).
          tx.setModes(control.modes)
          return commandResult('SET', rowMode)
        case 'commit':
          this.#tx = undefined
          await tx?.commit()
          return commandResult('COMMIT', rowMode)
        case 'rollback':
          this.#tx = undefined
          await tx?.rollback()
          return commandResult('ROLLBACK', rowMode)
        case 'unsupported':
          throw new KeelError('KEEL_QUERY_INVALID', control.reason)
        default:
          if (tx === undefined) {
            throw new KeelError(
              'KEEL_QUERY_INVALID',
              'SAVEPOINT, RELEASE and ROLLBACK TO can only be used in a transaction: send BEGIN first',
            )
          }
          return await tx.savepoint(control.kind, control.name)
      }
    } finally {
      this.#busy--
    }
  }

  /**
   * Gives the client back. In the middle of a transaction it is rolled back first (after whatever
   * statement is still running), and with an error its connection is retired instead of reused.
   */
  release(error?: unknown): void {
    this.#released = true
    const tx = this.#tx
    this.#tx = undefined
    if (tx === undefined) return
    const destroy = error !== undefined && error !== false && error !== null
    const rollback = () =>
      tx
        .rollback(destroy)
        .catch(() => undefined)
        .finally(() => {
          this.#busy--
        })
    this.#busy++
    this.#tail = this.#tail.then(rollback, rollback)
  }

  /** True after release(); the client still works (it holds nothing), as ORMs never rely on either. */
  get released(): boolean {
    return this.#released
  }

  /** pg.Client's quoting helpers (pg's own). */
  escapeIdentifier(value: string): string {
    return pg.escapeIdentifier(value)
  }

  escapeLiteral(value: string): string {
    return pg.escapeLiteral(value)
  }

  /** pg.Client's connect(): nothing to open. */
  connect(callback?: Callback<void>): Promise<void> | undefined {
    return settle(Promise.resolve(), callback)
  }

  /** pg.Client's end(): a lent client ends by being released. */
  end(callback?: Callback<void>): Promise<void> | undefined {
    this.release()
    return settle(Promise.resolve(), callback)
  }
}

function ignore(): undefined {
  return undefined
}
