import type { EnqueueOptions } from './job-port.js'
import type {
  QueryArrayConfig,
  QueryArrayResult,
  Queryable,
  QueryConfig,
  QueryOptions,
  QueryResult,
} from './query-types.js'

/**
 * The handle `db.transaction(fn)` passes to `fn`: one pinned connection, scoped to the tenant. Only what
 * a callback may call: keel commits when `fn` resolves and rolls back when it throws, so commit, rollback
 * and the outbox stay inside keel (ADR 0030).
 */
export interface Transaction extends Queryable {
  readonly tenantId: string
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
  /** A nested transaction: a savepoint, released on success and rolled back to when `fn` throws. */
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T>
  /**
   * Enqueues a job only if this transaction commits: it is written to the outbox in the transaction and
   * relayed after COMMIT (or by a worker's sweep if this process dies first). Validated now, like
   * db.enqueue(); needs `jobs.outbox: true` and the outbox table (applyJobOutbox).
   */
  enqueue(name: string, payload: unknown, options?: EnqueueOptions): Promise<{ jobId: string }>
}
