import { KeelError } from '../errors.js'
import type { HostInfo } from './host-info.js'

/**
 * A failure to open a connection to a host, as the documented KEEL_DB_UNAVAILABLE: the driver's error
 * (ECONNREFUSED, a connect timeout, 28P01...) is the `cause`, and the message and details name the
 * host by its name, address and port only. The driver's own message is left out of ours: it is not
 * needed to act, and keel's messages must never carry what a connection string held.
 */
export function hostUnavailable(info: HostInfo, error: unknown): KeelError {
  const code = (error as { code?: unknown } | null)?.code
  const message = error instanceof Error ? error.message : ''
  const reason =
    typeof code === 'string' ? code : /timeout/i.test(message) ? 'connect timeout' : 'connection failed'
  return new KeelError(
    'KEEL_DB_UNAVAILABLE',
    `cannot connect to ${info.name} (${info.address}:${info.port}): ${reason}`,
    {
      cause: error,
      details: {
        host: info.name,
        address: info.address,
        port: info.port,
        ...(typeof code === 'string' ? { code } : {}),
      },
    },
  )
}

/**
 * A call refused without trying because the primary's probe fails (ADR 0043): the same documented code
 * as a failed connection attempt (nothing ran; retry later or answer 503), with `reason: 'primary_down'`
 * and since when. Reads that need no read-your-writes never get it while a replica serves them.
 */
export function primaryDownError(info: HostInfo, down: { since: number; reason: string }): KeelError {
  return new KeelError(
    'KEEL_DB_UNAVAILABLE',
    `${info.name} (${info.address}:${info.port}) is down since ${new Date(down.since).toISOString()}; keel refuses calls that need it until it answers again`,
    {
      details: {
        host: info.name,
        address: info.address,
        port: info.port,
        reason: 'primary_down',
        downSince: new Date(down.since).toISOString(),
      },
    },
  )
}

/**
 * The socket to a host died under a statement (no SQLSTATE: "Connection terminated unexpectedly",
 * ECONNRESET, EPIPE), as when the primary is killed: KEEL_QUERY_TIMEOUT like a statement given up on
 * when its host was found down (HostPool.abandonInFlight), since a write's outcome is just as unknown.
 * The driver's error is the `cause`.
 */
export function connectionLost(info: HostInfo, error: unknown): KeelError {
  return new KeelError(
    'KEEL_QUERY_TIMEOUT',
    `the connection to ${info.name} (${info.address}:${info.port}) terminated while this statement ran; a write's outcome is unknown`,
    { cause: error, details: { host: info.name, reason: 'connection_lost' } },
  )
}

/** A driver error saying the socket died (not a server's SQLSTATE, not one of keel's own). */
export function isSocketLoss(error: unknown): boolean {
  if (error instanceof KeelError) return false
  const code = (error as { code?: unknown } | null)?.code
  if (code === 'ECONNRESET' || code === 'EPIPE') return true
  if (typeof code === 'string') return false
  const message = error instanceof Error ? error.message : ''
  return /^Connection terminated|not queryable|Client has encountered a connection error/i.test(message)
}
