import type { HostPool } from '../pool/host-pool.js'
import type { Lsn } from './lsn.js'
import type { ReplicaState } from './replica-monitor.js'

/**
 * Picks the replica for a read: among those in rotation that have replayed `minLsn` (as far as the
 * last poll or check knows; the read re-checks in its own round trip), the one with the fewest calls
 * outstanding, ties taken in turn. Least-outstanding adapts to a slow or distant replica without
 * weights; the rotation spreads an idle cluster's reads evenly.
 */
export class ReplicaRouter {
  readonly #replicas: readonly ReplicaState[]
  #turn = 0

  constructor(replicas: readonly ReplicaState[]) {
    this.#replicas = replicas
  }

  /** `busy`: hosts to pass over because a read there would have to wait (full pool). */
  choose(
    minLsn: Lsn | undefined,
    exclude: ReadonlySet<HostPool>,
    busy?: (host: HostPool) => boolean,
  ): ReplicaState | undefined {
    const n = this.#replicas.length
    if (n === 0) return undefined
    const start = this.#turn++ % n
    let best: ReplicaState | undefined
    // Known to have replayed minLsn beats merely keeping up (lag 0 at the last poll): the latter is
    // tried only when nothing better exists, and its own answer in the read's round trip decides.
    let bestKnown = false
    for (let i = 0; i < n; i++) {
      const state = this.#replicas[(start + i) % n]!
      if (!state.inRotation || exclude.has(state.host)) continue
      const known = minLsn === undefined || (state.replayLsn !== undefined && state.replayLsn >= minLsn)
      if (!known && state.lagMs !== 0) continue
      if (busy?.(state.host) === true) continue
      if (
        best === undefined ||
        (known && !bestKnown) ||
        (known === bestKnown && state.host.outstanding < best.host.outstanding)
      ) {
        best = state
        bestKnown = known
      }
    }
    return best
  }
}
