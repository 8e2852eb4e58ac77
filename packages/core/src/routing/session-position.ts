import { type ClusterIdentity, decodeToken, encodeToken, sameCluster } from './consistency-token.js'
import type { Lsn } from './lsn.js'

/** What a session's next read needs: the primary, or a replica that has replayed `minLsn`. */
export type ReadRequirement =
  | { readonly primaryOnly: true }
  | { readonly primaryOnly: false; readonly minLsn?: Lsn }

/** What the replica monitor knows of the primary, for vetting a session's position. */
export interface PrimaryPosition {
  readonly cluster: ClusterIdentity | undefined
  readonly primaryLsn: Lsn | undefined
  freshPrimaryLsn(): Promise<Lsn | undefined>
}

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

  /**
   * requirement(), after checking a position the primary has not reached yet (as far as the last poll
   * knows) against a fresh look at the primary: a real token can be newer than the last poll, but one
   * beyond the primary's current WAL position is forged or garbage. Such a session reads the primary
   * (no replica attempt) and drops the position, so it is never echoed back.
   */
  vetted(primary: PrimaryPosition): ReadRequirement | Promise<ReadRequirement> {
    const requirement = this.requirement(primary.cluster)
    if (requirement.primaryOnly || requirement.minLsn === undefined) return requirement
    const known = primary.primaryLsn
    // Unknown (the primary cannot be polled): trust the position as before; the replica's replay
    // position, read in the read's own round trip, still decides, and no read waits on a probe.
    if (known === undefined || requirement.minLsn <= known) return requirement
    return this.#vet(requirement.minLsn, primary)
  }

  async #vet(minLsn: Lsn, primary: PrimaryPosition): Promise<ReadRequirement> {
    const now = await primary.freshPrimaryLsn()
    if (now === undefined || minLsn <= now) return this.requirement(primary.cluster)
    // A write of this session while we looked moved the position on; that one is real.
    if (this.#lsn === minLsn) {
      this.#lsn = undefined
      this.#untrusted = true
    }
    return PRIMARY
  }

  token(): string | undefined {
    if (this.#lsn === undefined || this.#cluster === undefined) return undefined
    return encodeToken(this.#cluster, this.#lsn)
  }
}
