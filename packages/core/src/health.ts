import type { Engine } from './client/engine.js'
import { KeelError } from './errors.js'
import type { HostPool } from './pool/host-pool.js'
import { formatLsn } from './routing/lsn.js'

export interface HostHealth {
  name: string
  status: 'up' | 'down'
  role: 'primary' | 'replica'
  address: string
  port: number
  latencyMs?: number
  error?: string
  pool: { total: number; idle: number; waiting: number }
}

export interface ReplicaHealth extends HostHealth {
  role: 'replica'
  /** Reads may go here: up, a replica of this cluster, and within maxReplicaLagMs. */
  inRotation: boolean
  /** How far behind the primary it replays, as of the last poll. */
  lagMs: number | null
  replayLsn: string | null
}

export interface Health {
  /** 'up' while the primary answers: replicas only add capacity. */
  status: 'up' | 'down'
  primary: HostHealth
  replicas: ReplicaHealth[]
  /** Per host name, per tenant: connections held and calls waiting. */
  tenants: Record<string, Record<string, { active: number; waiting: number }>>
  /**
   * The cache's shared tier: 'down' when it does not answer a PING within the command timeout, or while
   * its circuit breaker is open (calls still succeed via L1).
   */
  cache: { redis: 'up' | 'down' | 'not configured' }
}

/** keel.health(): the primary (a live round trip), each replica (from the monitor) and tenant usage. */
export async function healthOf(engine: Engine): Promise<Health> {
  const redisUp = engine.config.cache.redis === undefined ? undefined : engine.cache.redisHealthy()
  const primary = await probeHost(engine.primary, engine.closed)
  const replicas = (engine.monitor?.replicas ?? []).map((state): ReplicaHealth => {
    const base = hostBase(state.host)
    return {
      ...base,
      role: 'replica',
      status: state.up && !engine.closed ? 'up' : 'down',
      inRotation: state.inRotation && !engine.closed,
      lagMs: state.lagMs === undefined || !Number.isFinite(state.lagMs) ? null : Math.round(state.lagMs),
      replayLsn: state.replayLsn === undefined ? null : formatLsn(state.replayLsn),
      ...(state.lastError === undefined ? {} : { error: state.lastError }),
    }
  })
  const redis = redisUp === undefined ? 'not configured' : (await redisUp) ? 'up' : 'down'
  return { status: primary.status, primary, replicas, tenants: engine.tenantSnapshot(), cache: { redis } }
}

function hostBase(host: HostPool) {
  const pool = host.pool
  return {
    name: host.info.name,
    address: host.info.address,
    port: host.info.port,
    pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount },
  }
}

// pg's per-query query_timeout (not in @types/pg's QueryConfig); the pool drops a client that hit it.
const HEALTH_PROBE = { text: 'SELECT 1', query_timeout: 2_000 }

async function probeHost(host: HostPool, closed: boolean): Promise<HostHealth> {
  const started = performance.now()
  const base = { ...hostBase(host), role: host.info.role }
  try {
    if (closed) throw new KeelError('KEEL_CLOSED', 'this keel instance is closed')
    // Bounded: a stopped host would keep readiness waiting forever on an idle connection.
    await host.pool.query({ ...HEALTH_PROBE })
    return { ...base, status: 'up', latencyMs: Math.round((performance.now() - started) * 100) / 100 }
  } catch (error) {
    return { ...base, status: 'down', error: error instanceof Error ? error.message : String(error) }
  }
}
