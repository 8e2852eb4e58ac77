import { type ClusterIdentity, decodeToken, encodeToken, sameCluster } from './consistency-token.js'
import type { Lsn } from './lsn.js'

/** What a session's next read needs: the primary, or a replica that has replayed `minLsn`. */
export type ReadRequirement =
  | { readonly primaryOnly: true }
  | { readonly primaryOnly: false; readonly minLsn?: Lsn }

const ANY: ReadRequirement = { primaryOnly: false }
const PRIMARY: ReadRequirement = { primaryOnly: true }

/**
 * A tenant client's read-your-writes state: the highest WAL position its writes reached (after
 * commit), and the cluster it belongs to. Resumed from a consistency token; a token that cannot be
 * trusted (garbage, another cluster, another timeline) makes the session read the primary.
 */
export class SessionPosition {
  #lsn: Lsn | undefined
  #cluster: ClusterIdentity | undefined
  #untrusted = false

  /** A session whose history cannot be known: it reads the primary until it writes. */
  static untrusted(): SessionPosition {
    const position = new SessionPosition()
    position.#untrusted = true
    return position
  }

  static fromToken(token: string | undefined): SessionPosition {
    const position = new SessionPosition()
    if (token === undefined || token === '') return position
    const decoded = decodeToken(token)
    if (decoded === undefined) return SessionPosition.untrusted()
    position.#lsn = decoded.lsn
    position.#cluster = decoded.cluster
    return position
  }

  /** Records where a write through this session ended (keeps the highest). */
  observe(lsn: Lsn, cluster: ClusterIdentity): void {
    if (this.#cluster !== undefined && !sameCluster(this.#cluster, cluster)) {
      // The cluster changed under the session (failover): older positions mean nothing now.
      this.#lsn = undefined
    }
    this.#cluster = cluster
    if (this.#lsn === undefined || lsn > this.#lsn) this.#lsn = lsn
    this.#untrusted = false
  }

  requirement(current: ClusterIdentity | undefined): ReadRequirement {
    if (this.#untrusted) return PRIMARY
    if (this.#lsn === undefined) return ANY
    // Until the primary's identity is known, a position cannot be checked against it.
    if (current === undefined || this.#cluster === undefined || !sameCluster(this.#cluster, current))
      return PRIMARY
    return { primaryOnly: false, minLsn: this.#lsn }
  }

  token(): string | undefined {
    if (this.#lsn === undefined || this.#cluster === undefined) return undefined
    return encodeToken(this.#cluster, this.#lsn)
  }
}
