import { context, type Span, trace } from '@opentelemetry/api'
import type { Placement } from '../placement/placement.js'
import type { Lease } from '../pool/lease.js'
import { parseLsn } from '../routing/lsn.js'
import type { Engine } from './engine.js'
import { PinnedTransaction, transactionControl } from './pinned-transaction.js'
import type { TransactionOptions } from './query-types.js'
import type { TransactionSession } from './run-transaction.js'

/**
 * A transaction begun on one leased connection of the primary and ended by an explicit commit() or
 * rollback(): what db.transaction(fn) runs around its callback, and what the pg.Pool facade's clients
 * drive statement by statement (BEGIN ... COMMIT, ADR 0031). The transaction is counted in flight
 * (keel.close() waits for it) and spanned from begin() until it ends; ending it releases the connection,
 * which is destroyed rather than reused unless the transaction ended cleanly.
 */
export class OpenTransaction {
  readonly tx: PinnedTransaction
  readonly #engine: Engine
  readonly #session: TransactionSession
  readonly #lease: Lease
  readonly #span: Span
  readonly #started: number
  #ended = false

  private constructor(
    engine: Engine,
    session: TransactionSession,
    lease: Lease,
    tx: PinnedTransaction,
    span: Span,
    started: number,
  ) {
    this.#engine = engine
    this.#session = session
    this.#lease = lease
    this.tx = tx
    this.#span = span
    this.#started = started
  }

  /**
   * Leases a connection of the tenant's primary (within the tenant's share); BEGIN and the scope go
   * with the first statement. Counted in flight from the start: close() waits for a transaction whose
   * tenant is still being placed.
   */
  static async begin(
    engine: Engine,
    session: TransactionSession,
    options: TransactionOptions,
  ): Promise<OpenTransaction> {
    const tenantId = session.tenantId
    const limits = engine.limitsFor(tenantId)
    engine.inFlight.enter()
    let placement: Placement
    try {
      placement = await session.placement()
    } catch (error) {
      engine.inFlight.leave()
      throw error
    }
    const primary = placement.cluster.primary
    const span = engine.telemetry.startTransaction(tenantId, primary.info)
    const started = performance.now()
    let lease: Lease | undefined
    try {
      lease = await session.statements.lease(primary, options, limits)
      const onCommitted = (lsn: string | undefined) => session.statements.observe(placement, parseLsn(lsn))
      const trackPosition = placement.cluster.routesReads && options.readOnly !== true
      const tx = new PinnedTransaction(
        engine,
        tenantId,
        placement.scope,
        lease,
        limits,
        options,
        trace.setSpan(context.active(), span),
        { trackPosition, onCommitted },
      )
      return new OpenTransaction(engine, session, lease, tx, span, started)
    } catch (error) {
      lease?.release()
      engine.endSpan(span, started, 'TRANSACTION', primary, error)
      engine.inFlight.leave()
      throw error
    }
  }

  /** Whether commit() or rollback() ran (whatever their outcome). */
  get ended(): boolean {
    return this.#ended
  }

  /**
   * COMMIT (KEEL_TRANSACTION_ABORTED when a statement of it had failed: it is rolled back instead),
   * then the outbox goes to the relay. Rolled back if the commit itself fails.
   */
  async commit(): Promise<void> {
    const control = transactionControl()
    let failure: unknown
    try {
      await control.commit(this.tx)
      const outbox = control.outbox(this.tx)
      if (outbox.length > 0) this.#session.relay(outbox)
    } catch (error) {
      failure = error
      await control.rollback(this.tx)
      throw error
    } finally {
      this.#end(failure)
    }
  }

  /** ROLLBACK; `failure` is what the span records (the callback's error). */
  async rollback(failure?: unknown, destroy = false): Promise<void> {
    if (destroy) this.#lease.markBroken()
    try {
      await transactionControl().rollback(this.tx)
    } finally {
      this.#end(failure)
    }
  }

  #end(failure: unknown): void {
    if (this.#ended) return
    this.#ended = true
    const engine = this.#engine
    transactionControl().close(this.tx)
    this.#lease.release()
    engine.endSpan(this.#span, this.#started, 'TRANSACTION', this.#lease.host, failure)
    engine.inFlight.leave()
  }
}
