import type { KeelError } from '../errors.js'
import type { HostPool } from '../pool/host-pool.js'
import type { Lsn } from './lsn.js'
import type { ReplicaMonitor } from './replica-monitor.js'
import { ReplicaRouter } from './replica-router.js'

/**
 * What one attempt of a read on a replica came to: served; `retry` on another host (the replica is
 * behind the session, hit a recovery conflict, or failed as a host, which also takes it out of
 * rotation); or `primary`, when no replica can serve this statement (schema lag, or it writes).
 */
export type ReadOutcome<R> =
  | { readonly kind: 'served'; readonly value: R }
  | { readonly kind: 'retry'; readonly hostFailure?: unknown }
  | { readonly kind: 'primary'; readonly learnedWrite: boolean }

export type ReadResult<R, F> =
  | { readonly served: true; readonly value: R; readonly host: HostPool }
  | { readonly served: false; readonly learnedWrite: boolean; readonly fallback?: F }

/**
 * One primary and its streaming replicas, as one database on them is reached: the unit a consistency
 * token names (ADR 0011) and a tenant's placement points at (ADR 0032). Owns host choice for reads,
 * the retry on another host and the ejection of a failed replica; the session above it only builds
 * batches and keeps its read-your-writes position. The monitor is the servers' (shared by every
 * database on them); the pools are this database's.
 */
export class Cluster {
  /** `address:port/database` of the primary: the identity placements share a cluster by. */
  readonly key: string
  readonly primary: HostPool
  readonly replicas: readonly HostPool[]
  readonly monitor: ReplicaMonitor | undefined
  readonly #router: ReplicaRouter | undefined

  constructor(
    key: string,
    primary: HostPool,
    replicas: readonly HostPool[],
    monitor: ReplicaMonitor | undefined,
  ) {
    this.key = key
    this.primary = primary
    this.replicas = replicas
    this.monitor = monitor
    this.#router =
      monitor === undefined
        ? undefined
        : new ReplicaRouter(replicas.map((host, i) => ({ state: monitor.replicas[i]!, host })))
  }

  /** Whether reads may go to replicas at all (replicas configured). */
  get routesReads(): boolean {
    return this.#router !== undefined
  }

  /**
   * Tries replicas in turn for a read needing `minLsn` replayed (undefined: any healthy one). A
   * replica whose pool (or the tenant's share of it) is `busy` is passed over while another host can
   * take the read; when none is left, `exhausted` runs in the same turn as that choice (the caller
   * asks for a primary connection there, so reads deciding right after count it) and its value comes
   * back as `fallback`.
   */
  async read<R, F>(
    minLsn: Lsn | undefined,
    busy: (host: HostPool) => boolean,
    attempt: (host: HostPool) => Promise<ReadOutcome<R>>,
    exhausted: () => F,
  ): Promise<ReadResult<R, F>> {
    const router = this.#router
    if (router === undefined) return { served: false, learnedWrite: false, fallback: exhausted() }
    const exclude = new Set<HostPool>()
    for (;;) {
      let slot = router.choose(minLsn, exclude, busy)
      // Every replica busy and the primary too: queue on the least loaded replica rather than pile
      // onto the primary.
      if (slot === undefined && busy(this.primary)) slot = router.choose(minLsn, exclude)
      if (slot === undefined) return { served: false, learnedWrite: false, fallback: exhausted() }
      const outcome = await attempt(slot.host)
      if (outcome.kind === 'served') return { served: true, value: outcome.value, host: slot.host }
      if (outcome.kind === 'primary') return { served: false, learnedWrite: outcome.learnedWrite }
      if (outcome.hostFailure !== undefined) this.monitor!.markDown(slot.host, outcome.hostFailure)
      exclude.add(slot.host)
    }
  }

  /**
   * A read with no replay requirement on the freshest replica in rotation, the next freshest after a
   * host failure; undefined when none is left or the statement needs the primary. For reads that would
   * need the primary while it is down, where the caller accepts a possibly stale answer (ADR 0043).
   */
  async readFreshest<R>(
    attempt: (host: HostPool) => Promise<ReadOutcome<R>>,
  ): Promise<{ readonly value: R; readonly host: HostPool } | undefined> {
    const router = this.#router
    if (router === undefined) return undefined
    const exclude = new Set<HostPool>()
    for (;;) {
      const slot = router.freshest(exclude)
      if (slot === undefined) return undefined
      const outcome = await attempt(slot.host)
      if (outcome.kind === 'served') return { value: outcome.value, host: slot.host }
      if (outcome.kind === 'primary') return undefined
      if (outcome.hostFailure !== undefined) this.monitor!.markDown(slot.host, outcome.hostFailure)
      exclude.add(slot.host)
    }
  }

  /** Every pool of this database, the primary first. */
  hosts(): HostPool[] {
    return [this.primary, ...this.replicas]
  }

  /** Ends this database's pools (the monitor is the servers': its registry closes it). */
  async end(abandon?: KeelError): Promise<void> {
    await Promise.all(this.hosts().map((host) => host.end(abandon)))
  }
}
