import type { Readable } from 'node:stream'
import type pg from 'pg'
import type { CacheClient } from '../cache/cache-client.js'
import type { CachedOptions, InvalidateOptions } from '../cache/cached-options.js'
import type { TenantContext } from '../context/tenant-context.js'
import { KeelError } from '../errors.js'
import type { Placement } from '../placement/placement.js'
import { SessionPosition } from '../routing/session-position.js'
import { loadParser, parserLoaded } from '../sql/sql-parser.js'
import type { TransactionModes } from '../sql/transaction-command.js'
import { DrivenTransaction } from './driven-transaction.js'
import type { Engine } from './engine.js'
import type { EnqueueOptions, JobStatus, OutboxRow } from './job-port.js'
import { OpenTransaction } from './open-transaction.js'
import { type PinnedTransaction, transactionControl } from './pinned-transaction.js'
import { toStatement } from './query-config.js'
import type {
  QueryArrayConfig,
  QueryArrayResult,
  Queryable,
  QueryConfig,
  QueryOptions,
  QueryResult,
  TransactionOptions,
} from './query-types.js'
import type { ExportOptions, ReadSession, StreamOptions } from './read-session.js'
import { runTransaction, savepoint, type TransactionSession } from './run-transaction.js'
import { StatementPath } from './statement-path.js'
import type { Transaction } from './transaction.js'

/**
 * What keel.run() and db.transaction() put in the async context: the session, and the transaction
 * whose callback is running (keel.current() and the session itself then act on that transaction).
 */
export interface CurrentEntry {
  readonly client: TenantClient
  readonly tx?: PinnedTransaction
}

/** How keel opens a session: the constructor is private, so an app cannot build one around keel's internals. */
export type OpenTenantClient = (
  engine: Engine,
  tenantId: string,
  position: SessionPosition,
  context: TenantContext<CurrentEntry>,
  acceptedWork?: boolean,
) => TenantClient

let open: OpenTenantClient
let drive: (client: TenantClient, modes: TransactionModes) => DrivenTransaction

/**
 * One tenant's handle on the database, and a read-your-writes session. Every statement carries the
 * tenant's scope in the same round trip; a statement that may leave session state on its pooled
 * connection is refused, or its connection is probed or destroyed after it (sql/statement-class.ts).
 * Reads go to a replica when that is safe; after a write, only to one that has replayed it
 * (statement-path.ts); transactions run in run-transaction.ts. Built by `keel.tenant(id)` only.
 */
export class TenantClient implements Queryable {
  static {
    open = (engine, tenantId, position, context, acceptedWork) =>
      new TenantClient(engine, tenantId, position, context, acceptedWork)
    drive = (client, modes) =>
      new DrivenTransaction(client.tenantId, modes, client.#inTransaction(), (options) => {
        client.#assertOpen()
        return OpenTransaction.begin(client.#engine, client.#transactionSession(), options)
      })
  }

  readonly tenantId: string
  readonly #engine: Engine
  readonly #position: SessionPosition
  readonly #context: TenantContext<CurrentEntry>
  /**
   * Work keel accepted before close() began (a running job, the relay of a committed transaction's
   * outbox) still gets the pools while close() drains; any other session is refused at once.
   */
  readonly #acceptedWork: boolean
  #statements: StatementPath | undefined
  #cache: CacheClient | undefined
  #pgPool: pg.Pool | undefined

  private constructor(
    engine: Engine,
    tenantId: string,
    position: SessionPosition,
    context: TenantContext<CurrentEntry>,
    acceptedWork = false,
  ) {
    this.#engine = engine
    this.tenantId = tenantId
    this.#position = position
    this.#context = context
    this.#acceptedWork = acceptedWork
  }

  #assertOpen(): void {
    if (!this.#acceptedWork) this.#engine.assertOpen()
  }

  get #paths(): StatementPath {
    this.#statements ??= new StatementPath(this.#engine, this.tenantId, this.#position)
    return this.#statements
  }

  /**
   * The open transaction whose callback this session is running in (this async context), if any.
   * Statements made there through the session, directly or via keel.current(), belong to it: run
   * beside it they would not see its writes, and would wait for a second connection of the tenant's
   * while the transaction holds the first (ADR 0026).
   */
  #inTransaction(): PinnedTransaction | undefined {
    const entry = this.#context.maybeCurrent()
    const tx = entry?.client === this ? entry.tx : undefined
    return tx !== undefined && !transactionControl().ended(tx) ? tx : undefined
  }

  /**
   * This tenant's cached value for `options.key` (L1, then Redis, then the loader, run once per key
   * across the fleet). Keys are namespaced by tenant: another tenant's same key is another entry.
   */
  cached<T>(options: CachedOptions, loader: () => Promise<T>): Promise<T> {
    this.#cache ??= this.#engine.cacheFor(this.tenantId)
    return this.#cache.cached(options, loader)
  }

  /**
   * Enqueues a defined job for this tenant: the payload is validated first (nothing is enqueued when it
   * fails), and the job carries this session's consistency token and trace. Returns at once.
   */
  enqueue(name: string, payload: unknown, options?: EnqueueOptions): Promise<{ jobId: string }> {
    const tx = this.#inTransaction()
    // Inside its own transaction, a job goes through the outbox (when there is one): enqueued only if
    // the transaction commits, and never before the worker could see the transaction's writes.
    if (tx !== undefined && this.#engine.config.jobs?.outbox === true)
      return tx.enqueue(name, payload, options)
    try {
      return this.#engine.jobPort().enqueue(this.tenantId, name, payload, options, this.consistencyToken)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** A job's state, progress, attempts, result or error; null when absent or another tenant's. */
  async jobStatus(jobId: string): Promise<JobStatus | null> {
    return this.#engine.jobPort().status(this.tenantId, jobId)
  }

  /** This tenant's jobs that exhausted their retries, newest first. */
  async deadLetters(options?: { limit?: number }): Promise<JobStatus[]> {
    return this.#engine.jobPort().deadLetters(this.tenantId, options?.limit)
  }

  /** Runs one of this tenant's dead letters again from its first attempt; false if it is not one. */
  async redrive(jobId: string): Promise<boolean> {
    return this.#engine.jobPort().redrive(this.tenantId, jobId)
  }

  /** Drops this tenant's keys, and its keys carrying the tags, in every process. */
  invalidate(options: InvalidateOptions): Promise<void> {
    this.#cache ??= this.#engine.cacheFor(this.tenantId)
    return this.#cache.invalidate(options)
  }

  /**
   * Where this session's writes ended, as an opaque string: hand it to the next request (the adapters
   * use the `keel-consistency` header) or a job, and pass it to `keel.tenant(id, { consistencyToken })`
   * there. Undefined until the session writes (and when no replicas are configured).
   */
  get consistencyToken(): string | undefined {
    return this.#position.token()
  }

  /**
   * Runs one statement in the tenant's scope, in one round trip. `text` is the SQL or pg's QueryConfig
   * (`{ text, values, rowMode: 'array', types }`; `name` is ignored, keel names statements itself).
   */
  query<R extends unknown[] = unknown[]>(
    config: QueryArrayConfig,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryArrayResult<R>>
  query<R = Record<string, unknown>>(
    text: string | QueryConfig,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<R>>
  async query<R>(
    text: string | QueryConfig | QueryArrayConfig,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<R>> {
    const tx = this.#inTransaction()
    if (tx !== undefined) return tx.query<R>(text as QueryConfig, values, options)
    const engine = this.#engine
    this.#assertOpen()
    const statement = toStatement(text, values)
    // Counted from here: keel.close() waits for a call that is still waiting for the parser to load.
    engine.inFlight.enter()
    try {
      const placement = this.#placement()
      if (!parserLoaded()) await loadParser()
      return await this.#paths.run<R>(
        placement instanceof Promise ? await placement : placement,
        statement,
        options,
      )
    } finally {
      engine.inFlight.leave()
    }
  }

  /**
   * The rows of one read as an async iterable, `batchSize` at a time from a server-side cursor in a
   * READ ONLY transaction of their own (a replica when the session allows), in the tenant's scope:
   * the next batch is fetched only when the loop asks for it. Stopping early (break, throw, the
   * signal) rolls the transaction back and frees the connection. Reads only (KEEL_QUERY_INVALID).
   */
  stream<R extends unknown[] = unknown[]>(
    config: QueryArrayConfig,
    values?: readonly unknown[],
    options?: StreamOptions,
  ): AsyncIterable<R>
  stream<R = Record<string, unknown>>(
    text: string | QueryConfig,
    values?: readonly unknown[],
    options?: StreamOptions,
  ): AsyncIterable<R>
  stream<R>(
    text: string | QueryConfig | QueryArrayConfig,
    values?: readonly unknown[],
    options?: StreamOptions,
  ): AsyncIterable<R> {
    this.#assertOpen()
    this.#outsideTransaction('stream')
    return this.#engine.readers.stream<R>(this.#readSession(), text, values, options)
  }

  /**
   * The tenant's rows of `options.tables` as a Node Readable (ndjson lines `{"table","row"}`, or csv
   * for one table), all from ONE snapshot (REPEATABLE READ, READ ONLY), fetched as the consumer reads:
   * memory stays at about one batch. Destroy the stream to stop early; it ends the transaction.
   */
  export(options: ExportOptions): Readable {
    this.#assertOpen()
    this.#outsideTransaction('export')
    return this.#engine.readers.export(this.#readSession(), options)
  }

  #outsideTransaction(call: string): void {
    if (this.#inTransaction() === undefined) return
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      `db.${call}() reads in a transaction of its own: call it outside db.transaction()'s callback`,
      { details: { tenantId: this.tenantId } },
    )
  }

  #readSession(): ReadSession {
    return {
      engine: this.#engine,
      tenantId: this.tenantId,
      position: this.#position,
      statements: this.#paths,
      placement: () => this.#placement(),
    }
  }

  /**
   * Where this tenant lives, looked up at each call (a map read; in database mode resolved once per
   * TTL): a tenant moved and invalidated is served from its new placement by sessions already open.
   */
  #placement(): Placement | Promise<Placement> {
    return this.#engine.placements.of(this.tenantId)
  }

  /**
   * This session as a `pg.Pool` of the app's `pg` (`instanceof pg.Pool`), for ORMs and query builders:
   * `query()` is this session's query, and `connect()` lends a client that holds no connection until it
   * sends BEGIN, which becomes a keel transaction (ADR 0031). Opens no connection of its own; `end()` is
   * a no-op (keel.close() closes the connections). The same object on every call.
   */
  pgPool(): pg.Pool {
    this.#pgPool ??= this.#engine.pgPool(() => this)
    return this.#pgPool
  }

  /**
   * Runs `fn` in one transaction on one connection of the primary. BEGIN, the tenant scope and the
   * first statement travel together; the transaction commits when `fn` resolves and rolls back when
   * it throws. The connection is destroyed rather than reused if the transaction could not be ended.
   * Inside the session's own transaction's callback, it is a savepoint of that transaction.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const open = this.#inTransaction()
    if (open !== undefined) return savepoint(open, fn, options)
    this.#assertOpen()
    return runTransaction(this.#engine, this.#transactionSession(), fn, options)
  }

  #transactionSession(): TransactionSession {
    return {
      tenantId: this.tenantId,
      placement: () => this.#placement(),
      statements: this.#paths,
      enter: (tx, fn) => this.#context.run({ client: this, tx }, fn),
      relay: (rows) => this.#relay(rows),
    }
  }

  /**
   * After COMMIT: the outbox rows go to the queue on the next turn of the event loop, never before the
   * commit and without delaying the caller. If this process dies first, a worker's sweep relays them.
   */
  #relay(rows: readonly OutboxRow[]): void {
    const engine = this.#engine
    const token = this.consistencyToken
    // The relay deletes the rows in this tenant's scope, through a session of its own (its DELETE is not
    // one of the caller's writes).
    const scoped = new TenantClient(engine, this.tenantId, SessionPosition.untrusted(), this.#context, true)
    // Part of the committed transaction's work: keel.close() waits for it.
    engine.inFlight.enter()
    setImmediate(() => {
      const relayed = engine.jobs?.relay(scoped, rows, token) ?? Promise.resolve()
      relayed
        .catch((error: unknown) => {
          engine.logger?.warn(
            { err: error, tenantId: this.tenantId },
            'keel jobs: outbox relay failed; the sweep will retry',
          )
        })
        .finally(() => engine.inFlight.leave())
    })
  }
}

/**
 * A transaction of `client` driven statement by statement (BEGIN ... COMMIT through the pg.Pool
 * facade, ADR 0031); a savepoint of the session's own transaction when begun inside its callback.
 */
export function driveTransaction(client: TenantClient, modes: TransactionModes): DrivenTransaction {
  return drive(client, modes)
}

/** A session of `tenantId` (keel.tenant, a job's db, the outbox relay): the one way to build a TenantClient. */
export function openTenantClient(...args: Parameters<OpenTenantClient>): TenantClient {
  return open(...args)
}
