import { context, trace } from '@opentelemetry/api'
import { KeelError } from '../errors.js'
import type { Lease } from '../pool/lease.js'
import { parseLsn } from '../routing/lsn.js'
import type { Engine } from './engine.js'
import type { OutboxRow } from './job-port.js'
import { PinnedTransaction, transactionControl } from './pinned-transaction.js'
import type { TransactionOptions } from './query-types.js'
import type { StatementPath } from './statement-path.js'
import type { Transaction } from './transaction.js'

/** What a transaction needs of the session that opens it, handed in by TenantClient. */
export interface TransactionSession {
  readonly tenantId: string
  /** Leases (within the tenant's share) and the session's position after COMMIT. */
  readonly statements: StatementPath
  /** Runs `fn` with `tx` as the session's open transaction (keel.current() and the session act on it). */
  enter<T>(tx: PinnedTransaction, fn: () => Promise<T>): Promise<T>
  /** After COMMIT: hands the transaction's outbox rows to the relay. */
  relay(rows: readonly OutboxRow[]): void
}

/**
 * Runs `fn` in one transaction on one connection of the primary. BEGIN, the tenant scope and the
 * first statement travel together; the transaction commits when `fn` resolves and rolls back when
 * it throws. The connection is destroyed rather than reused if the transaction could not be ended.
 */
export async function runTransaction<T>(
  engine: Engine,
  session: TransactionSession,
  fn: (tx: Transaction) => Promise<T>,
  options: TransactionOptions,
): Promise<T> {
  const tenantId = session.tenantId
  const limits = engine.limitsFor(tenantId)
  const span = engine.telemetry.startTransaction(tenantId, engine.primary.info)
  const started = performance.now()
  let lease: Lease | undefined
  let tx: PinnedTransaction | undefined
  let failure: unknown
  const control = transactionControl()
  engine.inFlight.enter()
  try {
    lease = await session.statements.lease(engine.primary, options, limits)
    const onCommitted = (lsn: string | undefined) => session.statements.observe(parseLsn(lsn))
    const trackPosition = engine.router !== undefined && options.readOnly !== true
    tx = new PinnedTransaction(
      engine,
      tenantId,
      lease,
      limits,
      options,
      trace.setSpan(context.active(), span),
      { trackPosition, onCommitted },
    )
    const open = tx
    const result = await session.enter(open, () => context.with(control.context(open), () => fn(open)))
    await control.commit(tx)
    const outbox = control.outbox(tx)
    if (outbox.length > 0) session.relay(outbox)
    return result
  } catch (error) {
    failure = error
    if (tx !== undefined) await control.rollback(tx)
    throw error
  } finally {
    if (tx !== undefined) control.close(tx)
    lease?.release()
    engine.endSpan(span, started, 'TRANSACTION', engine.primary, failure)
    engine.inFlight.leave()
  }
}

/**
 * db.transaction() inside the session's own transaction: a savepoint of it. Isolation and read-only
 * belong to the outer transaction; asking for them here would be a promise keel cannot keep.
 */
export function savepoint<T>(
  tx: Transaction,
  fn: (tx: Transaction) => Promise<T>,
  options: TransactionOptions,
): Promise<T> {
  if (options.isolationLevel !== undefined || options.readOnly === true) {
    return Promise.reject(
      new KeelError(
        'KEEL_QUERY_INVALID',
        'a transaction started inside another one is a savepoint of it: isolationLevel and readOnly belong to the outer transaction',
        { details: { tenantId: tx.tenantId } },
      ),
    )
  }
  return tx.transaction(fn)
}
