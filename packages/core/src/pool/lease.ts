import type pg from 'pg'
import type { KeelError } from '../errors.js'
import { destroySocket } from './deadline.js'
import type { HostPool } from './host-pool.js'
import { backendKeyOf, settledTransactionStatus, whenSettled } from './pg-internals.js'

// One 'error' listener per client for its whole life (not one added and removed per checkout): a
// checked-out client that loses its socket emits 'error', and without a listener Node would crash.
// The failing query is rejected by pg itself; the listener only records that the client is done for.
const watched = new WeakSet<pg.PoolClient>()
const failed = new WeakSet<pg.PoolClient>()

// Connections whose server process is the one Postgres reported at startup: nothing pools between.
const direct = new WeakSet<pg.ClientBase>()

/**
 * Marks a new connection direct when the backend key it got at startup is its server process's pid. A
 * pooler (PgBouncer) makes up its own key per client and moves the client between server processes,
 * so the pids differ. One query per new connection.
 */
export async function detectDirect(client: pg.ClientBase): Promise<void> {
  const result = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  if (result.rows[0]?.pid === backendKeyOf(client).processID) direct.add(client)
}

function watch(client: pg.PoolClient): void {
  if (watched.has(client)) return
  watched.add(client)
  client.on('error', () => failed.add(client))
}

/** A connection lent to one call; released exactly once, destroyed unless provably clean. */
export class Lease {
  readonly client: pg.PoolClient
  readonly host: HostPool
  /** Client-side limit on each statement, in ms (0 = none): see sendBounded. */
  readonly timeoutMs: number
  readonly graceMs: number
  /** Why keel gave up on this connection; every later statement on it fails with this at once. */
  lost: KeelError | undefined
  /** Statements in flight on this connection, each settled with the error when it is given up on. */
  readonly waiting = new Set<(error: KeelError) => void>()
  /**
   * When the statement in flight outlives its client-side limit (performance.now() ms; 0 = none armed),
   * and that limit: the host's sweep gives up on the connection then (see HostPool.armDeadline).
   */
  deadlineAt = 0
  deadlineMs = 0
  #broken = false
  #released = false
  readonly #done: () => void

  constructor(client: pg.PoolClient, host: HostPool, timeoutMs: number, graceMs: number, done: () => void) {
    this.client = client
    this.host = host
    this.timeoutMs = timeoutMs
    this.graceMs = graceMs
    this.#done = done
    watch(client)
  }

  /**
   * True when this connection reaches Postgres itself: the statements it prepared stay on its server
   * process. False behind a pooler (or unknown): inside a transaction keel then names nothing it cannot
   * retry, as a missing name there would abort the caller's transaction.
   */
  get direct(): boolean {
    return direct.has(this.client)
  }

  markBroken(): void {
    this.#broken = true
  }

  /**
   * Gives up on this connection from the client side (its host stopped answering, or keel.close()
   * ran out of time): asks the server to cancel, closes the socket, fails the statements in flight
   * with `error` and gives the permit back. The caller's own release later is a no-op.
   */
  abandon(error: KeelError): void {
    if (this.lost !== undefined) return
    this.lost = error
    this.#broken = true
    this.host.cancel(this.client)
    destroySocket(this.client)
    for (const settle of [...this.waiting]) settle(error)
    this.release()
  }

  release(): void {
    if (this.#released) return
    this.#released = true
    // pg rejects a failed statement before the ReadyForQuery that tells the connection's transaction
    // status; when that arrives in a later read (load, a pooler), the decision waits for it (bounded by
    // the grace period) instead of destroying a connection that is most likely clean.
    if (!this.#broken && !failed.has(this.client) && settledTransactionStatus(this.client) === undefined) {
      whenSettled(this.client, Math.max(this.graceMs, 1_000), () => this.#giveBack())
      return
    }
    this.#giveBack()
  }

  #giveBack(): void {
    // A client released inside an open or failed transaction still carries that transaction's
    // settings (the previous tenant's): pg-pool does not check, so keel destroys it instead. So is one
    // whose last ReadyForQuery never came (pg-internals.ts).
    const clean = !this.#broken && !failed.has(this.client) && settledTransactionStatus(this.client) === 'I'
    this.client.release(clean ? undefined : true)
    // The connection goes back first so the tenant's next waiter finds it free in the pool.
    this.#done()
  }
}
