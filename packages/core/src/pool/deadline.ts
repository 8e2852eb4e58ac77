import type pg from 'pg'
import { KeelError } from '../errors.js'
import { watchAbort } from './abort-watch.js'
import type { Lease } from './lease.js'
import { connectionOf, type PgQueryInternals } from './pg-internals.js'
import { abortError } from './tenant-limiter.js'

/**
 * The client-side limit on one statement: the server's own `statement_timeout` plus a grace for its
 * answer to travel, or pg's `query_timeout` when that is shorter. 0 means none (no statement timeout
 * and no query_timeout: the caller chose to wait for the server however long it takes).
 */
export function clientDeadlineMs(
  statementTimeoutMs: number,
  graceMs: number,
  queryTimeoutMs: number | undefined,
): number {
  const fromStatement = statementTimeoutMs > 0 ? statementTimeoutMs + graceMs : 0
  if (queryTimeoutMs === undefined || queryTimeoutMs <= 0) return fromStatement
  return fromStatement === 0 ? queryTimeoutMs : Math.min(fromStatement, queryTimeoutMs)
}

/**
 * Closes the client's socket at once. pg then fails whatever it still had queued on it and never calls
 * back the statement keel gave up on with a result; a backend that wakes up later finds no client.
 */
export function destroySocket(client: pg.PoolClient): void {
  connectionOf(client)?.stream?.destroy?.()
}

export function hostTimeoutError(lease: Lease, timeoutMs: number): KeelError {
  const info = lease.host.info
  return new KeelError(
    'KEEL_QUERY_TIMEOUT',
    `${info.name} (${info.address}:${info.port}) did not answer within ${timeoutMs} ms, so keel closed the connection; a write's outcome is unknown`,
    { details: { host: info.name, timeoutMs, reason: 'deadline' } },
  )
}

function unansweredAbort(lease: Lease, signal: AbortSignal): KeelError {
  const info = lease.host.info
  return new KeelError(
    'KEEL_ABORTED',
    `the operation was aborted and ${info.name} did not confirm the cancel within ${lease.graceMs} ms, so keel closed the connection; a write's outcome is unknown`,
    { cause: signal.reason, details: { host: info.name, serverAnswered: false } },
  )
}

/**
 * Runs one statement on a leased connection and guarantees the promise settles on the client side:
 * - an abort sends a cancel; the server's answer within `graceMs` decides, and without one the
 *   connection is closed and the call fails with KEEL_ABORTED;
 * - past the lease's deadline (checked by the host's sweep, HostPool.armDeadline) the connection is
 *   closed and the call fails with KEEL_QUERY_TIMEOUT;
 * - a lease given up on from outside (its host found down, keel.close() timing out) fails it at once.
 * Once settled, nothing pg reports later on that connection reaches the caller.
 */
export function sendBounded<R>(
  lease: Lease,
  query: PgQueryInternals,
  signal: AbortSignal | undefined,
): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    if (lease.lost !== undefined) {
      reject(lease.lost)
      return
    }
    // An abort that fired before this point would never fire its event again.
    if (signal?.aborted) {
      reject(abortError(signal))
      return
    }
    let done = false
    let timer: NodeJS.Timeout | undefined
    let unwatch: (() => void) | undefined
    const finish = (): boolean => {
      if (done) return false
      done = true
      lease.deadlineAt = 0
      clearTimeout(timer)
      unwatch?.()
      lease.waiting.delete(interrupt)
      return true
    }
    const interrupt = (error: KeelError) => {
      if (finish()) reject(error)
    }
    lease.waiting.add(interrupt)
    query.callback = (error, result) => {
      if (!finish()) return
      if (error) reject(signal?.aborted ? abortError(signal) : error)
      else resolve(result as R)
    }
    if (lease.timeoutMs > 0) lease.host.armDeadline(lease, lease.timeoutMs)
    if (signal !== undefined) {
      unwatch = watchAbort(signal, () => {
        // A cancel request can land after this statement finished and hit whatever the backend runs
        // next, so a cancelled connection is never handed to anyone again.
        lease.markBroken()
        lease.host.cancel(lease.client)
        // The server now has the grace to confirm the cancel; the statement's own deadline is moot.
        lease.deadlineAt = 0
        timer = setTimeout(() => lease.abandon(unansweredAbort(lease, signal)), lease.graceMs)
      })
    }
    lease.client.query(query as never)
  })
}
