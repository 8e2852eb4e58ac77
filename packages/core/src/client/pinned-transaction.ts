import type { Context } from '@opentelemetry/api'
import { KeelError } from '../errors.js'
import { connectionLost, isSocketLoss } from '../pool/host-unavailable.js'
import type { Lease } from '../pool/lease.js'
import { type Prelude, type RowShape, ScopedQuery } from '../pool/scoped-query.js'
import { COMMIT, WAL_POSITION_TEXT } from '../routing/wal-statements.js'
import { settleSession } from '../sql/session-guard.js'
import { SESSION_CHECK } from '../sql/session-probe.js'
import { loadParser, parserLoaded } from '../sql/sql-parser.js'
import { operationName } from '../telemetry/sanitize-sql.js'
import type { TenancyStrategy } from '../tenancy/tenancy-strategy.js'
import type { Engine, TenantLimits } from './engine.js'
import type { EnqueueOptions, OutboxRow } from './job-port.js'
import { toStatement } from './query-config.js'
import type {
  QueryArrayConfig,
  QueryArrayResult,
  QueryConfig,
  QueryOptions,
  QueryResult,
  TransactionOptions,
} from './query-types.js'
import type { Transaction } from './transaction.js'

const ISOLATION = {
  'read committed': 'READ COMMITTED',
  'repeatable read': 'REPEATABLE READ',
  serializable: 'SERIALIZABLE',
} as const

type State = 'new' | 'open' | 'closed'

/**
 * The session's side of a transaction (run-transaction.ts, TenantClient): commit, rollback, close, its
 * state, outbox and span context. `#private` on the object, so the callback's handle cannot reach them,
 * in TypeScript or at run time (ADR 0030).
 */
export interface TransactionControl {
  commit(tx: PinnedTransaction): Promise<void>
  rollback(tx: PinnedTransaction): Promise<void>
  close(tx: PinnedTransaction): void
  /** Committed, rolled back or abandoned: statements can no longer run in it. */
  ended(tx: PinnedTransaction): boolean
  /** Jobs enqueued in this transaction, relayed to the queue once it commits. */
  outbox(tx: PinnedTransaction): readonly OutboxRow[]
  /** The transaction span's context: statements run in it become its children. */
  context(tx: PinnedTransaction): Context
  /**
   * A savepoint statement named by the caller (the pg.Pool facade's clients, ADR 0031): sent unnamed,
   * in the first batch (after BEGIN and the scope) when nothing ran yet.
   */
  savepoint(tx: PinnedTransaction, kind: SavepointKind, name: string): Promise<QueryResult>
}

export type SavepointKind = 'savepoint' | 'release' | 'rollback_to'

const SAVEPOINT_SQL: Record<SavepointKind, string> = {
  savepoint: 'SAVEPOINT',
  release: 'RELEASE SAVEPOINT',
  rollback_to: 'ROLLBACK TO SAVEPOINT',
}

let control: TransactionControl | undefined

/**
 * What `db.transaction(fn)` runs on: one pinned connection, scoped to the tenant. Internal: callbacks see
 * it as the `Transaction` interface; the rest is the session's, through {@link transactionControl}.
 */
export class PinnedTransaction implements Transaction {
  static {
    control = {
      commit: (tx) => tx.#commit(),
      rollback: (tx) => tx.#rollback(),
      close: (tx) => {
        tx.#state = 'closed'
      },
      ended: (tx) => tx.#state === 'closed',
      outbox: (tx) => tx.#outbox,
      context: (tx) => tx.#context,
      savepoint: (tx, kind, name) => {
        if (tx.#state === 'closed') return Promise.reject(closedError())
        // The name as the parser read it (case folded unless quoted), quoted back exactly.
        return tx.#send(`${SAVEPOINT_SQL[kind]} "${name.replaceAll('"', '""')}"`)
      },
    }
  }

  readonly tenantId: string
  readonly #context: Context
  /** Jobs enqueued in this transaction, relayed to the queue once it commits. */
  readonly #outbox: OutboxRow[] = []
  readonly #engine: Engine
  readonly #lease: Lease
  readonly #preludes: readonly Prelude[]
  readonly #scope: TenancyStrategy
  #state: State = 'new'
  #savepoints = 0
  /** An opaque statement ran (ADR 0022): COMMIT carries the session probe, ROLLBACK retires. */
  #opaque = false
  readonly #position: { trackPosition: boolean; onCommitted: (lsn: string | undefined) => Promise<void> }

  constructor(
    engine: Engine,
    tenantId: string,
    scope: TenancyStrategy,
    lease: Lease,
    limits: TenantLimits,
    options: TransactionOptions,
    context: Context,
    position: { trackPosition: boolean; onCommitted: (lsn: string | undefined) => Promise<void> },
  ) {
    this.#position = position
    this.#engine = engine
    this.#scope = scope
    this.tenantId = tenantId
    this.#lease = lease
    this.#context = context
    let begin = 'BEGIN'
    if (options.isolationLevel !== undefined) {
      const level = ISOLATION[options.isolationLevel]
      if (level === undefined)
        throw new KeelError('KEEL_QUERY_INVALID', 'unknown transaction isolation level')
      begin += ` ISOLATION LEVEL ${level}`
    }
    if (options.readOnly === true) begin += ' READ ONLY'
    if (options.deferrable === true) begin += ' DEFERRABLE'
    const timeout = options.statementTimeoutMs ?? limits.statementTimeoutMs
    // SET LOCAL-style settings made after BEGIN last until COMMIT/ROLLBACK, and no longer.
    this.#preludes = [{ text: begin }, scope.scope(tenantId, timeout)]
  }

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
    const engine = this.#engine
    if (this.#state === 'closed') {
      throw new KeelError(
        'KEEL_TRANSACTION_CLOSED',
        'this transaction has ended; run queries inside its callback',
      )
    }
    const statement = toStatement(text, values)
    if (!parserLoaded()) await loadParser()
    const effect = engine.checkStatement(statement.text)
    const sql = statement.text
    if (effect === 'opaque') this.#opaque = true
    else if (effect === 'retire') this.#lease.markBroken()
    const params = statement.values
    const shape = statement.shape
    const operation = operationName(sql)
    const span = engine.telemetry.startQuery({
      text: sql,
      operation,
      tenantId: this.tenantId,
      host: this.#lease.host.info,
      parent: this.#context,
    })
    const started = performance.now()
    let failure: unknown
    const first = this.#state === 'new'
    let query = this.#next(sql, params, this.#cacheSize(first), shape)
    try {
      try {
        return await engine.submit<R>(this.#lease, query, options?.signal)
      } catch (error) {
        // The batch that opens the transaction failed as a whole on a name a transaction pooler's
        // server connection lacks (or has): roll back what it opened and send it again, unnamed.
        if (!first || !ScopedQuery.isLostStatement(error, query)) throw error
        await engine.rollBack(this.#lease)
        this.#lease.host.stopNaming(error)
        this.#state = 'new'
        query = this.#next(sql, params, 0, shape)
        return await engine.submit<R>(this.#lease, query, options?.signal)
      }
    } catch (error) {
      // A socket that died under the statement (the primary killed, a pooler restarted) is the same
      // KEEL_QUERY_TIMEOUT / connection_lost as outside a transaction, not the driver's raw error.
      failure = isSocketLoss(error)
        ? connectionLost(this.#lease.host.info, error)
        : engine.translate(this.tenantId, error, query, this.#lease, this.#scope)
      throw failure
    } finally {
      engine.endSpan(span, started, operation, this.#lease.host, failure)
    }
  }

  /** A nested transaction: a savepoint, released on success and rolled back to when `fn` throws. */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    if (this.#state === 'closed') {
      throw new KeelError(
        'KEEL_TRANSACTION_CLOSED',
        'this transaction has ended; run queries inside its callback',
      )
    }
    const name = `keel_sp_${++this.#savepoints}`
    await this.#send(`SAVEPOINT ${name}`)
    // Jobs enqueued inside the savepoint are forgotten with it: their outbox rows are rolled back.
    const queued = this.#outbox.length
    try {
      const result = await fn(this)
      await this.#send(`RELEASE SAVEPOINT ${name}`)
      return result
    } catch (error) {
      // The state may have changed while fn ran (a failed commit elsewhere closes it).
      if ((this.#state as State) !== 'closed') {
        await this.#send(`ROLLBACK TO SAVEPOINT ${name}`).catch(() => undefined)
      }
      this.#outbox.length = queued
      throw error
    }
  }

  async #commit(): Promise<void> {
    if (this.#state !== 'open') return
    if (this.#lease.client.getTransactionStatus() === 'E') {
      await this.#rollback()
      throw new KeelError(
        'KEEL_TRANSACTION_ABORTED',
        'a statement in this transaction failed, so it was rolled back; the callback must not swallow that error',
        { details: { tenantId: this.tenantId } },
      )
    }
    let command: string | undefined
    if (this.#position.trackPosition) {
      // COMMIT, then the WAL position after it, in one round trip: the session's reads can then wait
      // for a replica that has replayed this transaction.
      const query = new ScopedQuery(
        WAL_POSITION_TEXT,
        undefined,
        [COMMIT],
        this.#cacheSize(false),
        this.#sessionCheck(),
      )
      const result = await this.#submitCommit<{ lsn: string }>(query)
      command = query.preludeTags[0]
      if (command === 'COMMIT') await this.#position.onCommitted(result.rows[0]?.lsn)
    } else {
      // Control statements (savepoint names vary) are sent unnamed, outside the statement cache.
      const query = new ScopedQuery('COMMIT', undefined, [], 0, this.#sessionCheck())
      command = (await this.#submitCommit(query)).command
    }
    // Postgres answers COMMIT of a failed transaction with ROLLBACK and no error.
    if (command === 'ROLLBACK') {
      throw new KeelError('KEEL_TRANSACTION_ABORTED', 'Postgres rolled this transaction back at COMMIT', {
        details: { tenantId: this.tenantId },
      })
    }
  }

  async #rollback(): Promise<void> {
    if (this.#state !== 'open') {
      this.#state = 'closed'
      return
    }
    this.#state = 'closed'
    // What an opaque statement did outside the transaction (PREPARE, a session advisory lock) survives
    // the rollback, and no probe follows it: the connection is not reused.
    if (this.#opaque) this.#lease.markBroken()
    try {
      await this.#send('ROLLBACK')
    } catch {
      // The connection is in an unknown state: it must not go back to the pool.
      this.#lease.markBroken()
    }
  }

  /** See {@link Transaction.enqueue}. */
  async enqueue(name: string, payload: unknown, options?: EnqueueOptions): Promise<{ jobId: string }> {
    const jobs = this.#engine.jobPort()
    if (!this.#engine.config.jobs?.outbox) {
      throw new KeelError(
        'KEEL_JOBS_NOT_CONFIGURED',
        'tx.enqueue() needs jobs.outbox: true and the outbox table',
      )
    }
    const staged = jobs.stage(this.tenantId, name, payload, options)
    await this.query(staged.text, staged.values)
    this.#outbox.push(staged.row)
    return { jobId: staged.row.id }
  }

  /**
   * The first batch can be sent again if a name fails (nothing ran), so it uses the host's cache. Later
   * statements cannot: a missing name would abort the caller's transaction. They are named only on a
   * connection known to reach Postgres itself, where what it prepared is still there.
   */
  #cacheSize(first: boolean): number {
    const size = this.#lease.host.statementCacheSize
    return first || this.#lease.direct ? size : 0
  }

  #sessionCheck(): readonly Prelude[] {
    return this.#opaque ? SESSION_CHECK : []
  }

  /** Sends the COMMIT batch; after an opaque statement, its probe decides if the connection is reused. */
  async #submitCommit<R>(query: ScopedQuery): Promise<QueryResult<R>> {
    const effect = this.#opaque ? 'opaque' : 'plain'
    let succeeded = false
    try {
      const result = await this.#engine.submit<R>(this.#lease, query, undefined)
      this.#state = 'closed'
      succeeded = true
      return result
    } catch (error) {
      // The connection died with the COMMIT sent or about to be: whether it committed is unknown.
      if (isSocketLoss(error)) throw connectionLost(this.#lease.host.info, error)
      throw error
    } finally {
      settleSession(this.#lease, effect, query, succeeded)
    }
  }

  #next(
    text: string,
    values: readonly unknown[] | undefined,
    cacheSize: number,
    shape?: RowShape,
  ): ScopedQuery {
    if (this.#state === 'new') {
      this.#state = 'open'
      return new ScopedQuery(text, values, this.#preludes, cacheSize, [], shape)
    }
    return new ScopedQuery(text, values, [], cacheSize, [], shape)
  }

  #send(text: string): Promise<QueryResult> {
    // Control statements (savepoint names vary) are sent unnamed, outside the statement cache.
    return this.#engine.submit(this.#lease, this.#next(text, undefined, 0), undefined)
  }
}

function closedError(): KeelError {
  return new KeelError(
    'KEEL_TRANSACTION_CLOSED',
    'this transaction has ended; run queries inside its callback',
  )
}

/** The session's side of every transaction (see {@link TransactionControl}). */
export function transactionControl(): TransactionControl {
  return control!
}
