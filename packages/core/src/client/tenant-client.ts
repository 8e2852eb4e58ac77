// One piece for now (~490 lines): the session (its read-your-writes position and async context) and the
// two paths a statement takes, replicas then the primary, share the batch-building and error rules that
// keep a tenant's scope and session state right. Issue #13's seam moves host choice, retries and
// ejection into routing/ behind a placement interface; this file then keeps the session alone.
import { context, type Span, trace } from '@opentelemetry/api'
import type { CacheClient } from '../cache/cache-client.js'
import type { CachedOptions, InvalidateOptions } from '../cache/cached-options.js'
import type { TenantContext } from '../context/tenant-context.js'
import { KeelError } from '../errors.js'
import type { EnqueueOptions, JobStatus } from '../jobs/job-runtime.js'
import type { OutboxRow } from '../jobs/outbox.js'
import type { HostPool } from '../pool/host-pool.js'
import type { Lease } from '../pool/lease.js'
import { ScopedQuery } from '../pool/scoped-query.js'
import { classifySql, rememberWrite } from '../routing/classify-sql.js'
import { isHostFailure, isReadOnlyRefusal, isRecoveryConflict, isSchemaLag } from '../routing/host-errors.js'
import { type Lsn, parseLsn } from '../routing/lsn.js'
import { SessionPosition } from '../routing/session-position.js'
import { REPLAY_POSITION, WAL_POSITION } from '../routing/wal-statements.js'
import { sessionBatch, settleSession } from '../sql/session-guard.js'
import { loadParser, parserLoaded } from '../sql/sql-parser.js'
import type { SessionEffect } from '../sql/statement-class.js'
import { operationName } from '../telemetry/sanitize-sql.js'
import type { Engine, TenantLimits } from './engine.js'
import type { Queryable, QueryOptions, QueryResult, TransactionOptions } from './query-types.js'
import { Transaction } from './transaction.js'

/**
 * What keel.run() and db.transaction() put in the async context: the session, and the transaction
 * whose callback is running (keel.current() and the session itself then act on that transaction).
 */
export interface CurrentEntry {
  readonly client: TenantClient
  readonly tx?: Transaction
}

type Served<R> =
  | { result: QueryResult<R>; host: HostPool }
  // `primary`: a lease on the primary already asked for, so the next read sees the primary as busy.
  | { result: undefined; learnedWrite: boolean; primary?: Promise<Lease> }

/**
 * One tenant's handle on the database, and a read-your-writes session. Every statement carries the
 * tenant's scope in the same round trip; a statement that may leave session state on its pooled
 * connection is refused, or its connection is probed or destroyed after it (sql/statement-class.ts).
 * Reads go to a replica when that is safe; after a write, only to one that has replayed it.
 */
export class TenantClient implements Queryable {
  readonly tenantId: string
  readonly #engine: Engine
  readonly #position: SessionPosition
  readonly #context: TenantContext<CurrentEntry>

  #cache: CacheClient | undefined

  constructor(
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

  /**
   * Work keel accepted before close() began (a running job, the relay of a committed transaction's
   * outbox) still gets the pools while close() drains; any other session is refused at once.
   */
  readonly #acceptedWork: boolean

  #assertOpen(): void {
    if (!this.#acceptedWork) this.#engine.assertOpen()
  }

  /**
   * The open transaction whose callback this session is running in (this async context), if any.
   * Statements made there through the session, directly or via keel.current(), belong to it: run
   * beside it they would not see its writes, and would wait for a second connection of the tenant's
   * while the transaction holds the first (ADR 0026).
   */
  #inTransaction(): Transaction | undefined {
    const entry = this.#context.maybeCurrent()
    return entry?.client === this && entry.tx !== undefined && !entry.tx.ended ? entry.tx : undefined
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
    const tx = this.#inTransaction()
    if (tx !== undefined) return tx.query<R>(text, values, options)
    const engine = this.#engine
    this.#assertOpen()
    // Counted from here: keel.close() waits for a call that is still waiting for the parser to load.
    engine.inFlight.enter()
    try {
      if (!parserLoaded()) await loadParser()
      return await this.#query<R>(text, values, options)
    } finally {
      engine.inFlight.leave()
    }
  }

  async #query<R>(
    text: string,
    values: readonly unknown[] | undefined,
    options: QueryOptions | undefined,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    const sql = engine.checkText(text, false)
    const effect = engine.effectOf(sql)
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
    let leased: Promise<Lease> | undefined
    try {
      const kind = engine.router === undefined ? 'write' : classifySql(sql)
      let write = kind === 'write'
      let route: 'primary' | 'fallback' = 'primary'
      const consistency =
        options?.route === 'primary' ? 'strong' : (options?.consistency ?? engine.consistency)
      if (engine.router !== undefined && !write && consistency !== 'strong') {
        // A position the primary has not reached is forged or garbage: vetted() finds out (one fresh
        // look at the primary's WAL position) and the session then reads the primary, once.
        const requirement =
          consistency === 'eventual' ? undefined : await this.#position.vetted(engine.monitor!)
        if (requirement?.primaryOnly !== true) {
          const served = await this.#readFromReplicas<R>(
            sql,
            params,
            options,
            limits,
            requirement?.minLsn,
            span,
            effect,
          )
          if (served.result !== undefined) {
            host = served.host
            engine.telemetry.setRoute(span, host.info, 'replica')
            return served.result
          }
          write = served.learnedWrite
          leased = served.primary
        }
        route = 'fallback'
      }
      engine.telemetry.setRoute(span, host.info, write ? 'primary' : route)
      // A function may write (item 10 of issue #10): an opaque statement advances the session's
      // position like a write does; plain reads on the primary do not pay for it.
      const track = (write || effect === 'opaque') && engine.router !== undefined
      return await this.#onPrimary<R>(sql, params, options, limits, track, effect, leased)
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
    effect: SessionEffect,
  ): Promise<Served<R>> {
    const engine = this.#engine
    const exclude = new Set<HostPool>()
    // A replica whose pool (or this tenant's share of it) is full would make the read wait: another
    // replica, or the primary, serves it instead. Only when every host is that busy does it queue.
    const busy = (h: HostPool) => h.saturated(this.tenantId, limits.connections)
    for (;;) {
      let state = engine.router!.choose(minLsn, exclude, busy)
      if (state === undefined && busy(engine.primary)) state = engine.router!.choose(minLsn, exclude)
      if (state === undefined) {
        // Asked for now, in the same turn as the choice, so reads deciding right after this one count it.
        const primary = this.#lease(engine.primary, options, limits)
        return { result: undefined, learnedWrite: false, primary }
      }
      const host = state.host
      const scope = engine.strategy.scope(this.tenantId, timeoutOf(options, limits))
      const { preludes, postludes } = sessionBatch(effect, scope, [])
      if (minLsn !== undefined) preludes.push(REPLAY_POSITION)
      let lease: Lease | undefined
      const ref: { query?: ScopedQuery } = {}
      let succeeded = false
      try {
        lease = await this.#lease(host, options, limits)
        const result = await this.#send<R>(
          lease,
          (size) => new ScopedQuery(sql, params, preludes, size, postludes),
          options?.signal,
          ref,
        )
        succeeded = true
        if (minLsn !== undefined && this.#behind(ref.query!, preludes.length - 1, host, minLsn, span)) {
          exclude.add(host)
          continue
        }
        return { result, host }
      } catch (error) {
        // A replica that has not replayed the session's writes can fail the read for that very reason
        // (a table it does not have yet): its replay position, read before the statement, decides.
        if (
          minLsn !== undefined &&
          ref.query !== undefined &&
          this.#behind(ref.query, preludes.length - 1, host, minLsn, span)
        ) {
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
        // A full pool (KEEL_POOL_TIMEOUT, KEEL_TENANT_BUSY) is load, not failure: the replica stays in
        // rotation. The read only queued here because every host was that busy, so it fails as such.
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
        settleSession(lease, effect, ref.query, succeeded)
        lease?.release()
      }
    }
  }

  /** A connection of `host` within this tenant's share, its statements bounded by the call's timeout. */
  #lease(host: HostPool, options: QueryOptions | undefined, limits: TenantLimits): Promise<Lease> {
    const engine = this.#engine
    return host.lease(
      this.tenantId,
      limits.connections,
      engine.acquireTimeoutMs,
      options?.signal,
      timeoutOf(options, limits),
    )
  }

  /** Whether the replica's replay position, read in the read's own batch, is short of `minLsn`. */
  #behind(query: ScopedQuery, at: number, host: HostPool, minLsn: Lsn, span: Span): boolean {
    const replayed = parseLsn(query.preludeRows[at]?.[0])
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
    effect: SessionEffect,
    leased?: Promise<Lease>,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    const scope = engine.strategy.scope(this.tenantId, timeoutOf(options, limits))
    const lease = await (leased ?? this.#lease(engine.primary, options, limits))
    const ref: { query?: ScopedQuery } = {}
    const { preludes, postludes } = sessionBatch(effect, scope, trackPosition ? [WAL_POSITION] : [])
    let succeeded = false
    try {
      const build = (size: number) => new ScopedQuery(sql, params, preludes, size, postludes)
      const result = await this.#send<R>(lease, build, options?.signal, ref)
      succeeded = true
      if (trackPosition) await this.#observe(parseLsn(ref.query?.postludeRows[1]?.[0]))
      return result
    } catch (error) {
      if (preludes.length > 1) await engine.settle(lease)
      throw engine.translate(this.tenantId, error, ref.query, lease)
    } finally {
      settleSession(lease, effect, ref.query, succeeded)
      lease.release()
    }
  }

  /**
   * Sends one batch built with the host's statement cache size. The batch failed as a whole, so nothing
   * ran, and it is sent once more when: a plan made stale by DDL (prepared afresh), or one of its names
   * missing or taken on the server connection (26000/42P05: a transaction pooler in front), after
   * which the host sends everything unnamed. `ref.query` is the last batch sent, for error translation.
   */
  async #send<R>(
    lease: Lease,
    build: (statementCacheSize: number) => ScopedQuery,
    signal: AbortSignal | undefined,
    ref: { query?: ScopedQuery },
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    ref.query = build(lease.host.statementCacheSize)
    try {
      return await engine.submit<R>(lease, ref.query, signal)
    } catch (error) {
      const lost = ScopedQuery.isLostStatement(error, ref.query)
      if (!lost && !ScopedQuery.isStalePlan(error)) throw error
      if (ref.query.opensTransaction) await engine.rollBack(lease)
      if (lost) lease.host.stopNaming(error)
      ref.query = build(lease.host.statementCacheSize)
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

  async #observe(lsn: Lsn | undefined): Promise<void> {
    const monitor = this.#engine.monitor
    if (lsn === undefined || monitor === undefined) return
    monitor.observePrimary(lsn)
    if (monitor.cluster === undefined) await monitor.poll()
    if (monitor.cluster !== undefined) this.#position.observe(lsn, monitor.cluster)
  }

  /**
   * Runs `fn` in one transaction on one connection of the primary. BEGIN, the tenant scope and the
   * first statement travel together; the transaction commits when `fn` resolves and rolls back when
   * it throws. The connection is destroyed rather than reused if the transaction could not be ended.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const open = this.#inTransaction()
    if (open !== undefined) return savepoint(open, fn, options)
    const engine = this.#engine
    this.#assertOpen()
    const limits = engine.limitsFor(this.tenantId)
    const span = engine.telemetry.startTransaction(this.tenantId, engine.primary.info)
    const started = performance.now()
    let lease: Lease | undefined
    let tx: Transaction | undefined
    let failure: unknown
    engine.inFlight.enter()
    try {
      lease = await this.#lease(engine.primary, options, limits)
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
      const entry: CurrentEntry = { client: this, tx }
      const result = await this.#context.run(entry, () => context.with(entry.tx!.context, () => fn(tx!)))
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
      engine.inFlight.leave()
    }
  }
}

/**
 * db.transaction() inside the session's own transaction: a savepoint of it. Isolation and read-only
 * belong to the outer transaction; asking for them here would be a promise keel cannot keep.
 */
function savepoint<T>(
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

function timeoutOf(options: QueryOptions | undefined, limits: TenantLimits): number {
  return options?.statementTimeoutMs ?? limits.statementTimeoutMs
}
