import type { Readable } from 'node:stream'
import { context, type Span, trace } from '@opentelemetry/api'
import pgCopy from 'pg-copy-streams'
import type { Engine } from '../client/engine.js'
import { PinnedTransaction, transactionControl } from '../client/pinned-transaction.js'
import type { Consistency, IsolationLevel, QueryResult } from '../client/query-types.js'
import type { ReadSession } from '../client/read-session.js'
import { KeelError } from '../errors.js'
import type { Placement } from '../placement/placement.js'
import { watchAbort } from '../pool/abort-watch.js'
import { destroySocket } from '../pool/deadline.js'
import type { HostPool } from '../pool/host-pool.js'
import type { Lease } from '../pool/lease.js'
import { type RowShape, ScopedQuery } from '../pool/scoped-query.js'
import { abortError } from '../pool/tenant-limiter.js'
import type { ReadOutcome } from '../routing/cluster.js'
import { isHostFailure, isRecoveryConflict } from '../routing/host-errors.js'
import { type Lsn, parseLsn } from '../routing/lsn.js'

export type { ReadSession } from '../client/read-session.js'

export interface ReadTransactionOptions {
  readonly isolationLevel?: IsolationLevel
  readonly consistency?: Consistency | undefined
  readonly signal?: AbortSignal | undefined
  readonly statementTimeoutMs?: number | undefined
}

/** Read outside the transaction, before BEGIN: the snapshot taken after it includes at least this. */
const REPLAY_TEXT = 'SELECT pg_last_wal_replay_lsn()::text AS lsn'

/**
 * One READ ONLY transaction held open for a cursor (db.stream, db.export): on a replica when the
 * session's read-your-writes position allows (the cluster chooses and retries, routing/cluster.ts), else
 * on the primary. BEGIN and the tenant's scope come from PinnedTransaction, as for db.transaction(), so
 * the cursor runs in exactly the scope a transaction would. Counted in flight from open() until end():
 * keel.close() waits for it. end() rolls back and gives the connection back, or retires it when the
 * connection cannot be shown to be idle (a failed or cancelled FETCH, a killed backend).
 */
export class ReadTransaction {
  readonly #engine: Engine
  readonly #lease: Lease
  readonly #tx: PinnedTransaction
  readonly #span: Span
  readonly #started: number
  #ended: Promise<void> | undefined
  /** Something failed or was cancelled on the connection: it is retired, never rolled back and reused. */
  #unsure = false
  /** A COPY TO whose end has not been read: the connection is mid-COPY (copyOut). */
  #copying: Readable | undefined

  private constructor(engine: Engine, lease: Lease, tx: PinnedTransaction, span: Span, started: number) {
    this.#engine = engine
    this.#lease = lease
    this.#tx = tx
    this.#span = span
    this.#started = started
  }

  /** The host serving the read (a replica or the primary). */
  get host(): HostPool {
    return this.#lease.host
  }

  /** The client-side limit on one statement of this transaction's connection, in ms (0 = none). */
  get statementDeadlineMs(): number {
    return this.#lease.timeoutMs
  }

  static async open(session: ReadSession, options: ReadTransactionOptions): Promise<ReadTransaction> {
    const { engine, tenantId } = session
    engine.inFlight.enter()
    try {
      const found = session.placement()
      const placement = found instanceof Promise ? await found : found
      const cluster = placement.cluster
      const consistency = options.consistency ?? engine.consistency
      if (cluster.routesReads && consistency !== 'strong') {
        const requirement =
          consistency === 'eventual' ? undefined : await session.position.vetted(cluster.monitor!)
        if (requirement?.primaryOnly !== true) {
          const limits = engine.limitsFor(tenantId)
          const served = await cluster.read<ReadTransaction, Promise<Lease>>(
            requirement?.minLsn,
            (h) => h.saturated(tenantId, limits.connections),
            (replica) =>
              ReadTransaction.#onReplica(session, placement, replica, requirement?.minLsn, options),
            () => lease(session, cluster.primary, options),
          )
          if (served.served) return served.value
          return await ReadTransaction.#begin(
            session,
            placement,
            await (served.fallback ?? lease(session, cluster.primary, options)),
            options,
          )
        }
      }
      return await ReadTransaction.#begin(
        session,
        placement,
        await lease(session, cluster.primary, options),
        options,
      )
    } catch (error) {
      engine.inFlight.leave()
      throw error
    }
  }

  /** One attempt on a replica: behind the session, a recovery conflict or a host failure: another host. */
  static async #onReplica(
    session: ReadSession,
    placement: Placement,
    host: HostPool,
    minLsn: Lsn | undefined,
    options: ReadTransactionOptions,
  ): Promise<ReadOutcome<ReadTransaction>> {
    const engine = session.engine
    let leased: Lease | undefined
    try {
      leased = await lease(session, host, options)
      if (minLsn !== undefined) {
        const probe = new ScopedQuery(REPLAY_TEXT, undefined, [], 0)
        const result = await engine.submit<{ lsn: string | null }>(leased, probe, options.signal)
        const replayed = parseLsn(result.rows[0]?.lsn ?? undefined)
        if (replayed !== undefined) placement.cluster.monitor!.observeReplay(host, replayed)
        if (replayed === undefined || replayed < minLsn) {
          leased.release()
          return { kind: 'retry' }
        }
      }
      const opened = await ReadTransaction.#begin(session, placement, leased, options)
      return { kind: 'served', value: opened }
    } catch (error) {
      leased?.markBroken()
      leased?.release()
      if (isHostFailure(error)) return { kind: 'retry', hostFailure: error }
      if (isRecoveryConflict(error)) return { kind: 'retry' }
      throw error
    }
  }

  /** BEGIN READ ONLY and the tenant's scope, in one round trip, on `lease` (released here on failure). */
  static async #begin(
    session: ReadSession,
    placement: Placement,
    lease: Lease,
    options: ReadTransactionOptions,
  ): Promise<ReadTransaction> {
    const { engine, tenantId } = session
    const span = engine.telemetry.startTransaction(tenantId, lease.host.info)
    const started = performance.now()
    try {
      const tx = new PinnedTransaction(
        engine,
        tenantId,
        placement.scope,
        lease,
        engine.limitsFor(tenantId),
        {
          readOnly: true,
          ...(options.isolationLevel === undefined ? {} : { isolationLevel: options.isolationLevel }),
          ...(options.statementTimeoutMs === undefined
            ? {}
            : { statementTimeoutMs: options.statementTimeoutMs }),
        },
        trace.setSpan(context.active(), span),
        { trackPosition: false, onCommitted: async () => undefined },
      )
      // Sends BEGIN and the scope (the transaction's first batch) with a statement that reads nothing.
      await tx.query(
        'SELECT 1',
        undefined,
        options.signal === undefined ? undefined : { signal: options.signal },
      )
      return new ReadTransaction(engine, lease, tx, span, started)
    } catch (error) {
      lease.markBroken()
      lease.release()
      engine.endSpan(span, started, 'TRANSACTION', lease.host, error)
      throw error
    }
  }

  /**
   * A statement of the transaction's own (DECLARE, FETCH, CLOSE) on its connection, sent unnamed. A
   * failure leaves the connection in doubt: end() retires it.
   */
  async send<R>(
    text: string,
    values: readonly unknown[] | undefined,
    signal: AbortSignal | undefined,
    shape?: RowShape,
  ): Promise<QueryResult<R>> {
    if (this.#ended !== undefined) {
      if (signal?.aborted === true) throw abortError(signal)
      throw new KeelError('KEEL_TRANSACTION_CLOSED', 'this stream has ended')
    }
    try {
      return await this.#engine.submit<R>(
        this.#lease,
        new ScopedQuery(text, values, [], 0, [], shape),
        signal,
      )
    } catch (error) {
      this.#unsure = true
      throw error
    }
  }

  /**
   * `COPY (...) TO STDOUT` on the transaction's connection (db.export, ADR 0044): a Readable of the
   * server's bytes. pg-copy-streams stops reading the socket while this stream's buffer is full, so a
   * slow reader holds the server back through TCP. Until its 'end' the connection is mid-COPY: end()
   * then retires it and closes the socket (the backend's next write fails and it exits) instead of
   * rolling back. The signal, a lease given up on (its host down, keel.close()) and, when
   * `deadlineMs` > 0, the host's sweep past that many ms destroy the stream with their error.
   */
  copyOut(text: string, signal: AbortSignal | undefined, deadlineMs: number): Readable {
    if (this.#ended !== undefined) throw new KeelError('KEEL_TRANSACTION_CLOSED', 'this stream has ended')
    const lease = this.#lease
    if (lease.lost !== undefined) throw lease.lost
    if (signal?.aborted === true) throw abortError(signal)
    const copy = pgCopy.to(text)
    this.#copying = copy
    // pg reports a failure of the connection to the stream even after it was destroyed (handleError
    // emits 'error' itself): without a listener that would throw.
    copy.on('error', () => {
      this.#unsure = true
    })
    // A COPY stream never calls pg's query callback: called at ReadyForQuery, it clears pg's
    // query_timeout timer (when one is configured), which would otherwise fire after a finished COPY.
    const query = copy as unknown as { callback?: (error: Error | null) => void; handleReadyForQuery(): void }
    query.handleReadyForQuery = () => query.callback?.(null)
    const interrupt = (error: KeelError) => {
      this.#unsure = true
      copy.destroy(error)
    }
    lease.waiting.add(interrupt)
    const unwatch =
      signal === undefined
        ? undefined
        : watchAbort(signal, () => {
            this.#unsure = true
            copy.destroy(abortError(signal))
          })
    if (deadlineMs > 0) lease.host.armDeadline(lease, deadlineMs)
    copy.once('end', () => {
      if (this.#copying === copy) this.#copying = undefined
    })
    copy.once('close', () => {
      lease.deadlineAt = 0
      lease.waiting.delete(interrupt)
      unwatch?.()
    })
    lease.client.query(copy)
    return copy
  }

  /**
   * Ends the transaction once (later calls share the first): ROLLBACK (it only read) and the connection
   * back to the pool; retired instead after a failure, a cancel, or an opaque statement.
   */
  end(failure?: unknown, retire = false): Promise<void> {
    this.#ended ??= this.#finish(failure, retire)
    return this.#ended
  }

  async #finish(failure: unknown, retire: boolean): Promise<void> {
    const lease = this.#lease
    try {
      if (this.#copying !== undefined) {
        // Mid-COPY: the server keeps writing until its socket closes; nothing else can be sent on it.
        lease.markBroken()
        destroySocket(lease.client)
        transactionControl().close(this.#tx)
      } else if (this.#unsure || retire) {
        lease.markBroken()
        transactionControl().close(this.#tx)
      } else {
        // Marks the connection broken itself when the ROLLBACK cannot be sent.
        await transactionControl().rollback(this.#tx)
      }
    } finally {
      transactionControl().close(this.#tx)
      lease.release()
      this.#engine.endSpan(this.#span, this.#started, 'TRANSACTION', lease.host, failure)
      this.#engine.inFlight.leave()
    }
  }
}

function lease(session: ReadSession, host: HostPool, options: ReadTransactionOptions): Promise<Lease> {
  return session.statements.lease(
    host,
    {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.statementTimeoutMs === undefined ? {} : { statementTimeoutMs: options.statementTimeoutMs }),
    },
    session.engine.limitsFor(session.tenantId),
  )
}
