import type { Span } from '@opentelemetry/api'
import { KeelError } from '../errors.js'
import type { Placement } from '../placement/placement.js'
import type { HostPool } from '../pool/host-pool.js'
import { connectionLost, isSocketLoss } from '../pool/host-unavailable.js'
import type { Lease } from '../pool/lease.js'
import { ScopedQuery } from '../pool/scoped-query.js'
import { classifySql, rememberWrite } from '../routing/classify-sql.js'
import type { ReadOutcome } from '../routing/cluster.js'
import { isHostFailure, isReadOnlyRefusal, isRecoveryConflict, isSchemaLag } from '../routing/host-errors.js'
import { type Lsn, parseLsn } from '../routing/lsn.js'
import type { SessionPosition } from '../routing/session-position.js'
import { REPLAY_POSITION, WAL_POSITION } from '../routing/wal-statements.js'
import { sessionBatch, settleSession } from '../sql/session-guard.js'
import type { SessionEffect } from '../sql/statement-class.js'
import { operationName } from '../telemetry/sanitize-sql.js'
import type { Engine, TenantLimits } from './engine.js'
import type { Statement } from './query-config.js'
import type { QueryOptions, QueryResult } from './query-types.js'

// One piece (~330 lines): a statement's two paths, replicas then the primary (or, with the primary down
// and the caller's consent, the freshest replica), share the batch-building (scope, session guard,
// replay and WAL positions) and the error rules that keep a tenant's scope and session state right;
// apart they would each restate them. Host choice and retries are the cluster's.

/** One read as its attempts on replicas see it. */
interface ReplicaRead {
  readonly placement: Placement
  readonly statement: Statement
  readonly options: QueryOptions | undefined
  readonly limits: TenantLimits
  readonly span: Span
  readonly effect: SessionEffect
  readonly minLsn: Lsn | undefined
}

/**
 * Where one session's statements go outside a transaction: through the tenant's placement, a replica
 * of its cluster when that is safe (after a write, only one that has replayed it; the cluster picks and
 * retries, routing/cluster.ts), else its primary; and the session's position after each write. Every
 * statement carries the placement's scope in the same round trip. Nothing here knows whether the
 * tenant's database is shared or its own.
 */
export class StatementPath {
  readonly #engine: Engine
  readonly tenantId: string
  readonly #position: SessionPosition

  constructor(engine: Engine, tenantId: string, position: SessionPosition) {
    this.#engine = engine
    this.tenantId = tenantId
    this.#position = position
  }

  /** Runs one statement (the parser is loaded and the call counted by the caller). */
  async run<R>(
    placement: Placement,
    statement: Statement,
    options: QueryOptions | undefined,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    const cluster = placement.cluster
    const effect = engine.checkStatement(statement.text)
    checkWhenPrimaryDown(options?.whenPrimaryDown)
    const sql = statement.text
    const limits = engine.limitsFor(this.tenantId)
    const operation = operationName(sql)
    const span = engine.telemetry.startQuery({
      text: sql,
      operation,
      tenantId: this.tenantId,
      host: cluster.primary.info,
    })
    const started = performance.now()
    let host = cluster.primary
    let failure: unknown
    let leased: Promise<Lease> | undefined
    try {
      const kind = cluster.routesReads ? classifySql(sql) : 'write'
      let write = kind === 'write'
      let route: 'primary' | 'fallback' = 'primary'
      const consistency =
        options?.route === 'primary' ? 'strong' : (options?.consistency ?? engine.consistency)
      if (cluster.routesReads && !write && consistency !== 'strong') {
        // A position the primary has not reached is forged or garbage: vetted() finds out (one fresh
        // look at the primary's WAL position) and the session then reads the primary, once.
        const requirement =
          consistency === 'eventual' ? undefined : await this.#position.vetted(cluster.monitor!)
        if (requirement?.primaryOnly !== true) {
          const read = { placement, statement, options, limits, span, effect, minLsn: requirement?.minLsn }
          const served = await cluster.read<QueryResult<R>, Promise<Lease>>(
            read.minLsn,
            // A replica whose pool (or this tenant's share of it) is full would make the read wait:
            // another replica, or the primary, serves it instead.
            (h) => h.saturated(this.tenantId, limits.connections),
            (replica) => this.#onReplica<R>(replica, read),
            // Asked for in the same turn as the choice, so reads deciding right after this one count it.
            () => this.lease(cluster.primary, options, limits),
          )
          if (served.served) {
            host = served.host
            engine.telemetry.setRoute(span, host.info, 'replica')
            return served.value
          }
          write = served.learnedWrite
          leased = served.fallback
        }
        route = 'fallback'
        const staleAllowed = (options?.whenPrimaryDown ?? engine.whenPrimaryDown) === 'serve-stale'
        if (!write && consistency === 'session' && staleAllowed && cluster.primary.down !== undefined) {
          const stale = await this.#staleRead<R>(placement, statement, options, limits, span, effect, leased)
          if (stale !== undefined) {
            host = stale.host
            return stale.value
          }
          leased = undefined
        }
      }
      engine.telemetry.setRoute(span, host.info, write ? 'primary' : route)
      // A function may write (item 10 of issue #10): an opaque statement advances the session's
      // position like a write does; plain reads on the primary do not pay for it.
      const track = (write || effect === 'opaque') && cluster.routesReads
      return await this.#onPrimary<R>(placement, statement, options, limits, track, effect, leased)
    } catch (error) {
      failure = error
      throw error
    } finally {
      engine.endSpan(span, started, operation, host, failure)
    }
  }

  /**
   * A read-your-writes read that needs the primary while it is down (ADR 0043): with the caller's or
   * the config's `whenPrimaryDown: 'serve-stale'`, the freshest replica answers and the result says
   * `possiblyStale: true`; undefined when no replica can serve it (the primary's refusal is the answer).
   */
  async #staleRead<R>(
    placement: Placement,
    statement: Statement,
    options: QueryOptions | undefined,
    limits: TenantLimits,
    span: Span,
    effect: SessionEffect,
    leased: Promise<Lease> | undefined,
  ): Promise<{ value: QueryResult<R>; host: HostPool } | undefined> {
    const engine = this.#engine
    // The primary's lease asked for while choosing a replica: refused (it is down) or, if it came
    // back meanwhile, given back unused.
    void leased?.then(
      (lease) => lease.release(),
      () => undefined,
    )
    const read = { placement, statement, options, limits, span, effect, minLsn: undefined }
    const served = await placement.cluster.readFreshest((replica) => this.#onReplica<R>(replica, read))
    if (served === undefined) return undefined
    served.value.possiblyStale = true
    span.addEvent('keel.stale_read', { 'keel.replica.name': served.host.info.name })
    engine.telemetry.setRoute(span, served.host.info, 'replica')
    return served
  }

  /** One attempt of a read on `host`, a replica: what came of it decides the cluster's next step. */
  async #onReplica<R>(host: HostPool, read: ReplicaRead): Promise<ReadOutcome<QueryResult<R>>> {
    const engine = this.#engine
    const { placement, statement, options, limits, span, effect, minLsn } = read
    const scope = placement.scope.scope(this.tenantId, timeoutOf(options, limits))
    const { preludes, postludes } = sessionBatch(effect, scope, [])
    if (minLsn !== undefined) preludes.push(REPLAY_POSITION)
    let lease: Lease | undefined
    const ref: { query?: ScopedQuery } = {}
    let succeeded = false
    try {
      lease = await this.lease(host, options, limits)
      const result = await this.#send<R>(
        lease,
        (size) =>
          new ScopedQuery(statement.text, statement.values, preludes, size, postludes, statement.shape),
        options?.signal,
        ref,
      )
      succeeded = true
      if (
        minLsn !== undefined &&
        this.#behind(placement, ref.query!, preludes.length - 1, host, minLsn, span)
      ) {
        return { kind: 'retry' }
      }
      return { kind: 'served', value: result }
    } catch (error) {
      // A replica that has not replayed the session's writes can fail the read for that very reason
      // (a table it does not have yet): its replay position, read before the statement, decides.
      if (
        minLsn !== undefined &&
        ref.query !== undefined &&
        this.#behind(placement, ref.query, preludes.length - 1, host, minLsn, span)
      ) {
        return { kind: 'retry' }
      }
      if (isSchemaLag(error)) {
        span.addEvent('keel.replica_schema_lag', { 'keel.replica.name': host.info.name })
        return { kind: 'primary', learnedWrite: false }
      }
      if (isReadOnlyRefusal(error)) {
        // 25006: the replica ran nothing. The statement writes (a function, say): primary from now on.
        rememberWrite(statement.text)
        return { kind: 'primary', learnedWrite: true }
      }
      // A full pool (KEEL_POOL_TIMEOUT, KEEL_TENANT_BUSY) is load, not failure: the replica stays in
      // rotation. The read only queued here because every host was that busy, so it fails as such.
      const hostFailed = isHostFailure(error)
      if (!hostFailed && !isRecoveryConflict(error))
        throw engine.translate(this.tenantId, error, ref.query, lease, placement.scope)
      span.addEvent('keel.retry', {
        'keel.replica.name': host.info.name,
        'error.type': String((error as { code?: unknown } | null)?.code ?? 'Error'),
      })
      return hostFailed ? { kind: 'retry', hostFailure: error } : { kind: 'retry' }
    } finally {
      settleSession(lease, effect, ref.query, succeeded)
      lease?.release()
    }
  }

  /** A connection of `host` within this tenant's share, its statements bounded by the call's timeout. */
  lease(host: HostPool, options: QueryOptions | undefined, limits: TenantLimits): Promise<Lease> {
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
  #behind(
    placement: Placement,
    query: ScopedQuery,
    at: number,
    host: HostPool,
    minLsn: Lsn,
    span: Span,
  ): boolean {
    const replayed = parseLsn(query.preludeRows[at]?.[0])
    if (replayed !== undefined) placement.cluster.monitor!.observeReplay(host, replayed)
    if (replayed !== undefined && replayed >= minLsn) return false
    span.addEvent('keel.replica_behind', { 'keel.replica.name': host.info.name })
    return true
  }

  async #onPrimary<R>(
    placement: Placement,
    statement: Statement,
    options: QueryOptions | undefined,
    limits: TenantLimits,
    trackPosition: boolean,
    effect: SessionEffect,
    leased?: Promise<Lease>,
  ): Promise<QueryResult<R>> {
    const engine = this.#engine
    const scope = placement.scope.scope(this.tenantId, timeoutOf(options, limits))
    const lease = await (leased ?? this.lease(placement.cluster.primary, options, limits))
    const ref: { query?: ScopedQuery } = {}
    const { preludes, postludes } = sessionBatch(effect, scope, trackPosition ? [WAL_POSITION] : [])
    let succeeded = false
    try {
      const build = (size: number) =>
        new ScopedQuery(statement.text, statement.values, preludes, size, postludes, statement.shape)
      const result = await this.#send<R>(lease, build, options?.signal, ref)
      succeeded = true
      if (trackPosition) await this.observe(placement, parseLsn(ref.query?.postludeRows[1]?.[0]))
      return result
    } catch (error) {
      if (isSocketLoss(error)) {
        // The primary may be gone: the monitor looks now rather than at its next poll.
        void placement.cluster.monitor?.poll()
        throw connectionLost(lease.host.info, error)
      }
      if (preludes.length > 1) await engine.settle(lease)
      throw engine.translate(this.tenantId, error, ref.query, lease, placement.scope)
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

  /** A write of this session (a statement or a committed transaction) ended at `lsn` on `placement`. */
  async observe(placement: Placement, lsn: Lsn | undefined): Promise<void> {
    const monitor = placement.cluster.monitor
    if (lsn === undefined || monitor === undefined) return
    monitor.observePrimary(lsn)
    if (monitor.cluster === undefined) await monitor.poll()
    if (monitor.cluster !== undefined) this.#position.observe(lsn, monitor.cluster)
  }
}

function checkWhenPrimaryDown(value: unknown): void {
  if (value === undefined || value === 'fail' || value === 'serve-stale') return
  throw new KeelError('KEEL_QUERY_INVALID', "whenPrimaryDown must be 'fail' or 'serve-stale'")
}

function timeoutOf(options: QueryOptions | undefined, limits: TenantLimits): number {
  return options?.statementTimeoutMs ?? limits.statementTimeoutMs
}
