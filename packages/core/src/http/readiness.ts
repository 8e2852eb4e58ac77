import type { Keel } from '../keel.js'

export interface ReadinessBody {
  /** 'degraded' (HTTP 200): the primary is down, reads are served by replicas (ADR 0043). */
  status: 'ready' | 'degraded' | 'not ready'
  /** Present when degraded: 'primary_down'. */
  reason?: 'primary_down'
  primary: 'up' | 'down'
  replicas: Array<{ name: string; status: 'up' | 'down'; inRotation: boolean; lagMs: number | null }>
  cache: { redis: 'up' | 'down' | 'not configured' }
}

/** What a liveness probe gets: the process answers; nothing else is looked at. */
export const LIVENESS_BODY = Object.freeze({ status: 'ok' })

/**
 * Readiness from keel.health(): ready while the primary answers (in database mode: while a tenant
 * database answers) and (unless `requireRedis` is false) the
 * cache's Redis is not down; a replica down only costs capacity. With the primary down and a replica in
 * rotation it answers 200 'degraded' (reason primary_down): the instance still serves reads, and taking
 * every instance out of the load balancer would turn a write outage into a full one (ADR 0043).
 * The body is a summary: no addresses, errors or pool internals.
 */
export async function readiness(
  keel: Keel,
  requireRedis = true,
): Promise<{ status: 200 | 503; body: ReadinessBody }> {
  const health = await keel.health()
  const degraded = health.degraded !== undefined
  // health.status, not health.primary's: in database mode the primary field is only the first tenant
  // database, and one tenant database down is not a reason to take the instance out of rotation.
  const ready = (health.status === 'up' || degraded) && (!requireRedis || health.cache.redis !== 'down')
  return {
    status: ready ? 200 : 503,
    body: {
      status: ready ? (degraded ? 'degraded' : 'ready') : 'not ready',
      ...(ready && degraded ? { reason: 'primary_down' as const } : {}),
      primary: health.primary.status,
      replicas: health.replicas.map((r) => ({
        name: r.name,
        status: r.status,
        inRotation: r.inRotation,
        lagMs: r.lagMs,
      })),
      cache: health.cache,
    },
  }
}
