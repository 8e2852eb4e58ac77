import type { HostPool } from '../pool/host-pool.js'
import type { Lsn } from './lsn.js'
import type { ReplicaState } from './replica-monitor.js'

/** One replica server as one cluster (one database) reaches it: the server's state, the database's pool. */
export interface ReplicaSlot {
  readonly state: ReplicaState
  readonly host: HostPool
}

/**
 * Picks the replica for a read: among those in rotation that have replayed `minLsn` (as far as the
 * last poll or check knows; the read re-checks in its own round trip), the one with the fewest calls
 * outstanding, ties taken in turn. Least-outstanding adapts to a slow or distant replica without
 * weights; the rotation spreads an idle cluster's reads evenly.
 */
export class ReplicaRouter {
  readonly #replicas: readonly ReplicaSlot[]
  #turn = 0

  constructor(replicas: readonly ReplicaSlot[]) {
    this.#replicas = replicas
  }

  /** `busy`: hosts to pass over because a read there would have to wait (full pool). */
  choose(
    minLsn: Lsn | undefined,
    exclude: ReadonlySet<HostPool>,
    busy?: (host: HostPool) => boolean,
  ): ReplicaSlot | undefined {
    const n = this.#replicas.length
    if (n === 0) return undefined
    const start = this.#turn++ % n
    let best: ReplicaSlot | undefined
    // Known to have replayed minLsn beats merely keeping up (lag 0 at the last poll): the latter is
    // tried only when nothing better exists, and its own answer in the read's round trip decides.
    let bestKnown = false
    for (let i = 0; i < n; i++) {
      const slot = this.#replicas[(start + i) % n]!
      const state = slot.state
      if (!state.inRotation || exclude.has(slot.host)) continue
      const known = minLsn === undefined || (state.replayLsn !== undefined && state.replayLsn >= minLsn)
      if (!known && state.lagMs !== 0) continue
      if (busy?.(slot.host) === true) continue
      if (
        best === undefined ||
        (known && !bestKnown) ||
        (known === bestKnown && slot.host.outstanding < best.host.outstanding)
      ) {
        best = slot
        bestKnown = known
      }
    }
    return best
  }

  /**
   * The replica in rotation that has replayed the most (ADR 0043): where a read-your-writes read goes
   * when the primary is down and the caller accepts a possibly stale answer.
   */
  freshest(exclude: ReadonlySet<HostPool>): ReplicaSlot | undefined {
    let best: ReplicaSlot | undefined
    for (const slot of this.#replicas) {
      if (!slot.state.inRotation || exclude.has(slot.host)) continue
      const replay = slot.state.replayLsn ?? -1n
      if (best === undefined || replay > (best.state.replayLsn ?? -1n)) best = slot
    }
    return best
  }
}
