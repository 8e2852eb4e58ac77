import type { Lsn } from './lsn.js'

/**
 * Where a session's writes ended, portable across requests and into jobs. The cluster's system
 * identifier and timeline travel with the LSN: a token from another cluster, or from before a failover
 * (the promoted replica starts a new timeline), says nothing about this primary's WAL and means "read
 * the primary". Format (opaque to callers): `k1.<system id>.<timeline>.<lsn hex>`.
 */
export interface ClusterIdentity {
  readonly systemId: string
  readonly timeline: number
}

export interface DecodedToken {
  readonly cluster: ClusterIdentity
  readonly lsn: Lsn
}

const TOKEN = /^k1\.(\d{1,20})\.(\d{1,10})\.([0-9a-f]{1,16})$/

export function encodeToken(cluster: ClusterIdentity, lsn: Lsn): string {
  return `k1.${cluster.systemId}.${cluster.timeline}.${lsn.toString(16)}`
}

/** Undefined for anything that is not a well-formed token: never an error for the caller. */
export function decodeToken(token: unknown): DecodedToken | undefined {
  if (typeof token !== 'string' || token.length > 64) return undefined
  const m = TOKEN.exec(token)
  if (m === null) return undefined
  return { cluster: { systemId: m[1]!, timeline: Number(m[2]) }, lsn: BigInt(`0x${m[3]}`) }
}

export function sameCluster(a: ClusterIdentity, b: ClusterIdentity): boolean {
  return a.systemId === b.systemId && a.timeline === b.timeline
}
