import { context, type Span, trace } from '@opentelemetry/api'
import type { CacheClient } from '../cache/cache-client.js'
import type { CachedOptions, InvalidateOptions } from '../cache/cached-options.js'
import type { EnqueueOptions, JobStatus } from '../jobs/job-runtime.js'
import type { OutboxRow } from '../jobs/outbox.js'
import type { HostPool, Lease } from '../pool/host-pool.js'
import { type Prelude, ScopedQuery } from '../pool/scoped-query.js'
import { classifySql, rememberWrite } from '../routing/classify-sql.js'
import { isHostFailure, isReadOnlyRefusal, isRecoveryConflict, isSchemaLag } from '../routing/host-errors.js'
import { type Lsn, parseLsn } from '../routing/lsn.js'
import { SessionPosition } from '../routing/session-position.js'
import { BEGIN, COMMIT, REPLAY_POSITION, WAL_POSITION } from '../routing/wal-statements.js'
import { operationName } from '../telemetry/sanitize-sql.js'
import type { Engine, TenantLimits } from './engine.js'
import type { Queryable, QueryOptions, QueryResult, TransactionOptions } from './query-types.js'
import { Transaction } from './transaction.js'

type Served<R> = { result: QueryResult<R>; host: HostPool } | { result: undefined; learnedWrite: boolean }

/**
 * One tenant's handle on the database, and a read-your-writes session. Every statement carries the
 * tenant's scope in the same round trip; nothing about the tenant is ever left on a pooled connection.
 * Reads go to a replica when that is safe; after a write, only to one that has replayed it.
 */
export class TenantClient implements Queryable {
  readonly tenantId: string
  readonly #engine: Engine
  readonly #position: SessionPosition

  #cache: CacheClient | undefined

  constructor(engine: Engine, tenantId: string, position: SessionPosition) {
    this.#engine = engine
    this.tenantId = tenantId
    this.#position = position
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
    try {
      return this.#engine.jobRuntime().enqueue(this.tenantId, name, payload, options, this.consistencyToken)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** A job's state, progress, attempts, result or error; null when absent or another tenant's. */
  async jobStatus(jobId: string): Promise<JobStatus | null> {
    return this.#engine.jobRuntime().status(this.tenantId, jobId)
  }

  /** This tenant's jobs that exhausted their retries, newest first. */
  async deadLetters(options?: { limit?: number }): Promise<JobStatus[]> {
    return this.#engine.jobRuntime().deadLetters(this.tenantId, options?.limit)
  }

  /** Runs one of this tenant's dead letters again from its first attempt; false if it is not one. */
  async redrive(jobId: string): Promise<boolean> {
    return this.#engine.jobRuntime().redrive(this.tenantId, jobId)
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
    const operation = operationName(sql)
    const span = engine.telemetry.startQuery({
      text: sql,
      operation,
      tenantId: this.tenantId,
      host: engine.primary.info,
    })
    const started = performance.now()
    let host = engine.primary
    let failure: unknown
    try {
      const kind = engine.router === undefined ? 'write' : classifySql(sql)
      let write = kind === 'write'
      let route: 'primary' | 'fallback' = 'primary'
      const consistency =
        options?.route === 'primary' ? 'strong' : (options?.consistency ?? engine.consistency)
      if (engine.router !== undefined && !write && consistency !== 'strong') {
        const requirement =
          consistency === 'eventual' ? undefined : this.#position.requirement(engine.monitor!.cluster)
        if (requirement?.primaryOnly !== true) {
          const served = await this.#readFromReplicas<R>(
            sql,
            params,
            options,
            limits,
            requirement?.minLsn,
            span,
          )
          if (served.result !== undefined) {
            host = served.host
            engine.telemetry.setRoute(span, host.info, 'replica')
            return served.result
          }
          write = served.learnedWrite
        }
        route = 'fallback'
      }
      engine.telemetry.setRoute(span, host.info, write ? 'primary' : route)
      return await this.#onPrimary<R>(sql, params, options, limits, write && engine.router !== undefined)
    } catch (error) {
      failure = error
      throw error
    } finally {
      engine.endSpan(span, started, operation, host, failure)
    }
  }

  /** Tries replicas in turn; undefined result means the primary must serve it. */
  async #readFromReplicas<R>(
    sql: string,
    params: readonly unknown[] | undefined,
    options: QueryOptions | undefined,
    limits: TenantLimits,
    minLsn: Lsn | undefined,
    span: Span,
  ): Promise<Served<R>> {
    const engine = this.#engine
    const exclude = new Set<HostPool>()
    for (;;) {
      const state = engine.router!.choose(minLsn, exclude)
      if (state === undefined) return { result: undefined, learnedWrite: false }
      const host = state.host
      const preludes: Prelude[] = [engine.strategy.scope(this.tenantId, timeoutOf(options, limits))]
      if (minLsn !== undefined) preludes.push(REPLAY_POSITION)
      let lease: Lease | undefined
      const ref: { query?: ScopedQuery } = {}
      try {
        lease = await host.lease(this.tenantId, limits.connections, engine.acquireTimeoutMs, options?.signal)
        const size = engine.statementCacheSize
        const result = await this.#send<R>(
          lease,
          () => new ScopedQuery(sql, params, preludes, size),
          options?.signal,
          ref,
        )
        if (minLsn !== undefined && this.#behind(ref.query!, host, minLsn, span)) {
          exclude.add(host)
          continue
        }
        return { result, host }
      } catch (error) {
        // A replica that has not replayed the session's writes can fail the read for that very reason
        // (a table it does not have yet): its replay position, read before the statement, decides.
        if (minLsn !== undefined && ref.query !== undefined && this.#behind(ref.query, host, minLsn, span)) {
          exclude.add(host)
          continue
        }
        if (isSchemaLag(error)) {
          span.addEvent('keel.replica_schema_lag', { 'keel.replica.name': host.info.name })
          return { result: undefined, learnedWrite: false }
        }
        if (isReadOnlyRefusal(error)) {
          // 25006: the replica ran nothing. The statement writes (a function, say): primary from now on.
          rememberWrite(sql)
          return { result: undefined, learnedWrite: true }
        }
        const hostFailed = isHostFailure(error)
        if (!hostFailed && !isRecoveryConflict(error))
          throw engine.translate(this.tenantId, error, ref.query, lease)
        if (hostFailed) engine.monitor!.markDown(host, error)
        exclude.add(host)
        span.addEvent('keel.retry', {
          'keel.replica.name': host.info.name,
          'error.type': String((error as { code?: unknown } | null)?.code ?? 'Error'),
        })
      } finally {
        lease?.release()
      }
    }
  }

  /** Whether the replica's replay position, read in the read's own batch, is short of `minLsn`. */
  #behind(query: ScopedQuery, host: HostPool, minLsn: Lsn, span: Span): boolean {
    const replayed = parseLsn(query.preludeRows[1]?.[0])
    if (replayed !== undefined) this.#engine.monitor!.observeReplay(host, replayed)
    if (replayed !== undefined && replayed >= minLsn) return false
    span.addEvent('keel.replica_behind', { 'keel.replica.name': host.info.name })
    return true
  }

  async #onPrimary<R>(
    sql: string,
    params: readonly unknown[] | undefined,
    options: QueryOptions | undefined,
    limits: TenantLimits,
    trackPosition: boolean,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    const scope = engine.strategy.scope(this.tenantId, timeoutOf(options, limits))
    const lease = await engine.primary.lease(
      this.tenantId,
      limits.connections,
      engine.acquireTimeoutMs,
      options?.signal,
    )
    const ref: { query?: ScopedQuery } = {}
    const size = engine.statementCacheSize
    try {
      if (!trackPosition) {
        return await this.#send<R>(
          lease,
          () => new ScopedQuery(sql, params, [scope], size),
          options?.signal,
          ref,
        )
      }
      const build = () => new ScopedQuery(sql, params, [BEGIN, scope], size, [COMMIT, WAL_POSITION])
      const result = await this.#send<R>(lease, build, options?.signal, ref)
      await this.#observe(parseLsn(ref.query?.postludeRows[1]?.[0]))
      return result
    } catch (error) {
      if (trackPosition) await engine.settle(lease)
      throw engine.translate(this.tenantId, error, ref.query, lease)
    } finally {
      lease.release()
    }
  }

  /**
   * Sends one batch; a plan made stale by DDL is prepared afresh and sent once more (the batch failed
   * as a whole, so nothing ran). `ref.query` is the last batch sent, for error translation.
   */
  async #send<R>(
    lease: Lease,
    build: () => ScopedQuery,
    signal: AbortSignal | undefined,
    ref: { query?: ScopedQuery },
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    ref.query = build()
    try {
      return await engine.submit<R>(lease, ref.query, signal)
    } catch (error) {
      if (!ScopedQuery.isStalePlan(error)) throw error
      await engine.settle(lease)
      ref.query = build()
      return await engine.submit<R>(lease, ref.query, signal)
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
    const scoped = new TenantClient(engine, this.tenantId, SessionPosition.untrusted())
    setImmediate(() => {
      engine.jobs?.relay(scoped, rows, token).catch((error: unknown) => {
        engine.logger?.warn(
          { err: error, tenantId: this.tenantId },
          'keel jobs: outbox relay failed; the sweep will retry',
        )
      })
    })
  }

  async #observe(lsn: Lsn | undefined): Promise<void> {
    const monitor = this.#engine.monitor
    if (lsn === undefined || monitor === undefined) return
    if (monitor.cluster === undefined) await monitor.poll()
    if (monitor.cluster !== undefined) this.#position.observe(lsn, monitor.cluster)
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
      lease = await engine.primary.lease(
        this.tenantId,
        limits.connections,
        engine.acquireTimeoutMs,
        options.signal,
      )
      const onCommitted = (lsn: string | undefined) => this.#observe(parseLsn(lsn))
      const trackPosition = engine.router !== undefined && options.readOnly !== true
      tx = new Transaction(
        engine,
        this.tenantId,
        lease,
        limits,
        options,
        trace.setSpan(context.active(), span),
        {
          trackPosition,
          onCommitted,
        },
      )
      const result = await context.with(tx.context, () => fn(tx!))
      await tx.commit()
      if (tx.outbox.length > 0) this.#relay(tx.outbox)
      return result
    } catch (error) {
      failure = error
      await tx?.rollback()
      throw error
    } finally {
      tx?.close()
      lease?.release()
      engine.endSpan(span, started, 'TRANSACTION', engine.primary, failure)
    }
  }
}

function timeoutOf(options: QueryOptions | undefined, limits: TenantLimits): number {
  return options?.statementTimeoutMs ?? limits.statementTimeoutMs
}
