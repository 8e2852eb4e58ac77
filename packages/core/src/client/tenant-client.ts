import { context, trace } from '@opentelemetry/api'
import type { Lease } from '../pool/host-pool.js'
import { ScopedQuery } from '../pool/scoped-query.js'
import { operationName } from '../telemetry/sanitize-sql.js'
import type { Engine } from './engine.js'
import type { Queryable, QueryOptions, QueryResult, TransactionOptions } from './query-types.js'
import { Transaction } from './transaction.js'

/**
 * One tenant's handle on the database. Every statement it sends carries the tenant's scope in the
 * same round trip; nothing about the tenant is ever left on a pooled connection.
 */
export class TenantClient implements Queryable {
  readonly tenantId: string
  readonly #engine: Engine

  constructor(engine: Engine, tenantId: string) {
    this.#engine = engine
    this.tenantId = tenantId
  }

  async query<R = Record<string, unknown>>(
    text: string,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    engine.assertOpen()
    const sql = engine.checkText(text, false)
    const params = engine.checkValues(values)
    const limits = engine.limitsFor(this.tenantId)
    const signal = options?.signal
    const timeout = options?.statementTimeoutMs ?? limits.statementTimeoutMs
    const span = engine.telemetry.startQuery({
      text: sql,
      tenantId: this.tenantId,
      host: engine.primary.info,
    })
    const started = performance.now()
    let lease: Lease | undefined
    let query: ScopedQuery | undefined
    let failure: unknown
    try {
      lease = await engine.lease(this.tenantId, limits, signal)
      const scope = [engine.strategy.scope(this.tenantId, timeout)]
      query = new ScopedQuery(sql, params, scope, engine.statementCacheSize)
      try {
        return await engine.submit<R>(lease, query, signal)
      } catch (error) {
        // DDL changed the result shape under a cached plan. The batch failed as a whole, so nothing
        // ran: preparing afresh and sending it once more is safe.
        if (!ScopedQuery.isStalePlan(error)) throw error
        query = new ScopedQuery(sql, params, scope, engine.statementCacheSize)
        return await engine.submit<R>(lease, query, signal)
      }
    } catch (error) {
      failure = engine.translate(this.tenantId, error, query, lease)
      throw failure
    } finally {
      if (lease !== undefined) engine.giveBack(this.tenantId, lease)
      engine.endSpan(span, started, operationName(sql), failure)
    }
  }

  /**
   * Runs `fn` in one transaction on one connection of the primary. BEGIN, the tenant scope and the
   * first statement travel together; the transaction commits when `fn` resolves and rolls back when
   * it throws. The connection is destroyed rather than reused if the transaction could not be ended.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const engine = this.#engine
    engine.assertOpen()
    const limits = engine.limitsFor(this.tenantId)
    const span = engine.telemetry.startTransaction(this.tenantId, engine.primary.info)
    const started = performance.now()
    let lease: Lease | undefined
    let tx: Transaction | undefined
    let failure: unknown
    try {
      lease = await engine.lease(this.tenantId, limits, options.signal)
      tx = new Transaction(
        engine,
        this.tenantId,
        lease,
        limits,
        options,
        trace.setSpan(context.active(), span),
      )
      const result = await context.with(tx.context, () => fn(tx!))
      await tx.commit()
      return result
    } catch (error) {
      failure = error
      await tx?.rollback()
      throw error
    } finally {
      tx?.close()
      if (lease !== undefined) engine.giveBack(this.tenantId, lease)
      engine.endSpan(span, started, 'TRANSACTION', failure)
    }
  }
}
