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

  choose(minLsn: Lsn | undefined, exclude: ReadonlySet<HostPool>): ReplicaState | undefined {
    const n = this.#replicas.length
    if (n === 0) return undefined
    const start = this.#turn++ % n
    let best: ReplicaState | undefined
    for (let i = 0; i < n; i++) {
      const state = this.#replicas[(start + i) % n]!
      if (!state.inRotation || exclude.has(state.host)) continue
      if (minLsn !== undefined && (state.replayLsn === undefined || state.replayLsn < minLsn)) continue
      if (best === undefined || state.host.outstanding < best.host.outstanding) best = state
    }
    return best
  }
}
