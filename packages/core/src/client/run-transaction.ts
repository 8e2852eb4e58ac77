import { context } from '@opentelemetry/api'
import { KeelError } from '../errors.js'
import type { Placement } from '../placement/placement.js'
import type { Engine } from './engine.js'
import type { OutboxRow } from './job-port.js'
import { OpenTransaction } from './open-transaction.js'
import { type PinnedTransaction, transactionControl } from './pinned-transaction.js'
import type { TransactionOptions } from './query-types.js'
import type { StatementPath } from './statement-path.js'
import type { Transaction } from './transaction.js'

/** What a transaction needs of the session that opens it, handed in by TenantClient. */
export interface TransactionSession {
  readonly tenantId: string
  /** Where the tenant lives (resolved at the transaction's start in database mode). */
  placement(): Placement | Promise<Placement>
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
  const open = await OpenTransaction.begin(engine, session, options)
  const tx = open.tx
  let result: T
  try {
    result = await session.enter(tx, () => context.with(transactionControl().context(tx), () => fn(tx)))
  } catch (error) {
    await open.rollback(error)
    throw error
  }
  await open.commit()
  return result
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
