import type { Keel } from '../keel.js'

export interface ReadinessBody {
  status: 'ready' | 'not ready'
  primary: 'up' | 'down'
  replicas: Array<{ name: string; status: 'up' | 'down'; inRotation: boolean; lagMs: number | null }>
  cache: { redis: 'up' | 'down' | 'not configured' }
}

/** What a liveness probe gets: the process answers; nothing else is looked at. */
export const LIVENESS_BODY = Object.freeze({ status: 'ok' })

/**
 * Readiness from keel.health(): ready while the primary answers and (unless `requireRedis` is false) the
 * cache's Redis is not down; a replica down only costs capacity. The body is a summary: no addresses, errors or pool internals.
 */
export async function readiness(
  keel: Keel,
  requireRedis = true,
): Promise<{ status: 200 | 503; body: ReadinessBody }> {
  const health = await keel.health()
  const ready = health.primary.status === 'up' && (!requireRedis || health.cache.redis !== 'down')
  return {
    status: ready ? 200 : 503,
    body: {
      status: ready ? 'ready' : 'not ready',
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
