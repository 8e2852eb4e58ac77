import type { Engine } from './client/engine.js'
import { KeelError } from './errors.js'
import type { HostPool } from './pool/host-pool.js'
import type { Cluster } from './routing/cluster.js'
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

/** database mode: one Postgres server's connection budget (tenancy.maxConnections) and its use. */
export interface ServerHealth {
  /** `address:port` */
  server: string
  max: number
  /** Connections open or being opened by this process there, the replica monitor's included. */
  used: number
  /** Calls waiting for one of them. */
  waiting: number
}

/** database mode: one tenant database (a cluster keel has served), probed like the primary. */
export interface DatabaseHealth {
  /** `address:port/database` */
  key: string
  primary: HostHealth
  replicas: ReplicaHealth[]
}

export interface Health {
  /**
   * 'up' while the primary answers: replicas only add capacity. In database mode, while at least one
   * tenant database keel has served answers (or none has been served yet); each is in `databases`.
   */
  status: 'up' | 'down'
  /** The primary; in database mode the first tenant database served (see `databases`). */
  primary: HostHealth
  replicas: ReplicaHealth[]
  /** database mode: every tenant database served so far. */
  databases?: DatabaseHealth[]
  /** database mode: each server's connection budget. */
  servers?: ServerHealth[]
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
  const placements = engine.placements
  const clusters = placements.registry.clusters()
  const databases = await Promise.all(clusters.map((cluster) => clusterHealth(cluster, engine.closed)))
  const redis = redisUp === undefined ? 'not configured' : (await redisUp) ? 'up' : 'down'
  const tenants = engine.tenantSnapshot()
  const cache = { redis } as const
  if (placements.fixed !== undefined) {
    const [only] = databases
    return { status: only!.primary.status, primary: only!.primary, replicas: only!.replicas, tenants, cache }
  }
  // database mode: one tenant database down is that tenant's outage, not the process's.
  const up = databases.length === 0 || databases.some((d) => d.primary.status === 'up')
  const first = databases[0]
  const budgets = placements.registry.budgets()
  return {
    status: engine.closed ? 'down' : up ? 'up' : 'down',
    primary: first?.primary ?? noDatabaseYet(engine.closed),
    replicas: first?.replicas ?? [],
    databases,
    servers: Object.entries(budgets).map(([server, b]) => ({ server, ...b })),
    tenants,
    cache,
  }
}

async function clusterHealth(cluster: Cluster, closed: boolean): Promise<DatabaseHealth> {
  const primary = await probeHost(cluster.primary, closed)
  const replicas = cluster.replicas.map((host): ReplicaHealth => {
    const state = cluster.monitor?.stateOf(host)
    const base = hostBase(host)
    return {
      ...base,
      role: 'replica',
      status: state?.up === true && !closed ? 'up' : 'down',
      inRotation: state?.inRotation === true && !closed,
      lagMs: state?.lagMs === undefined || !Number.isFinite(state.lagMs) ? null : Math.round(state.lagMs),
      replayLsn: state?.replayLsn === undefined ? null : formatLsn(state.replayLsn),
      ...(state?.lastError === undefined ? {} : { error: state.lastError }),
    }
  })
  return { key: cluster.key, primary, replicas }
}

function noDatabaseYet(closed: boolean): HostHealth {
  return {
    name: 'primary',
    role: 'primary',
    address: '',
    port: 0,
    status: closed ? 'down' : 'up',
    pool: { total: 0, idle: 0, waiting: 0 },
  }
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
