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
  pool: {
    total: number
    idle: number
    waiting: number
    /** database mode: permits of the server's budget this pool holds, calls using them, calls waiting for one. */
    budget?: { held: number; inUse: number; waiting: number }
  }
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
  /**
   * Present while the primary is down and a replica is in rotation (ADR 0043): reads that need no
   * read-your-writes are served, writes and read-your-writes reads fail fast with KEEL_DB_UNAVAILABLE.
   * `status` stays 'down' (the primary does not answer); readiness answers 200 'degraded'.
   */
  degraded?: Degraded
}

/** Why keel serves only part of its calls. */
export interface Degraded {
  reason: 'primary_down'
  /** When the replica monitor found the primary down (ISO 8601). */
  since: string
  message: string
}

/** keel.health(): the primary (a live round trip), each replica (from the monitor) and tenant usage. */
export async function healthOf(engine: Engine): Promise<Health> {
  const redisUp = engine.config.cache.redis === undefined ? undefined : engine.cache.redisHealthy()
  const placements = engine.placements
  const clusters = placements.registry.clusters()
  const tenants = engine.tenantSnapshot()
  if (placements.fixed !== undefined) {
    const cluster = placements.fixed.cluster
    const down = cluster.monitor?.primaryDown
    // Known down: the monitor probes it every replicaPollMs, and a readiness probe must not wait out a
    // connection timeout on a host that does not answer.
    const primary =
      down === undefined || engine.closed
        ? await probeHost(cluster.primary, engine.closed)
        : {
            ...hostBase(cluster.primary),
            role: 'primary' as const,
            status: 'down' as const,
            error: down.reason,
          }
    const redis = await redisStatus(redisUp)
    const replicas = replicasOf(cluster, engine.closed)
    const since = down?.since ?? Date.now()
    const degraded: Degraded | undefined =
      primary.status === 'down' && !engine.closed && replicas.some((r) => r.inRotation)
        ? {
            reason: 'primary_down',
            since: new Date(since).toISOString(),
            message:
              'the primary does not answer: reads are served by replicas; writes and read-your-writes reads fail with KEEL_DB_UNAVAILABLE',
          }
        : undefined
    return {
      status: primary.status,
      primary,
      replicas,
      tenants,
      cache: { redis },
      ...(degraded === undefined ? {} : { degraded }),
    }
  }
  // database mode: one live round trip per server (through its most recently used database, within
  // the budget), not one per database: a fleet's health check must not churn its connections. A
  // database whose last connection attempt failed (dropped, renamed, refused) is down on its own.
  const servers = new Map<string, Cluster[]>()
  for (const cluster of clusters) {
    const server = `${cluster.primary.info.address}:${cluster.primary.info.port}`
    servers.set(server, [...(servers.get(server) ?? []), cluster])
  }
  const probes = new Map<string, HostHealth>()
  await Promise.all(
    [...servers].map(async ([server, members]) => {
      // A server whose replica monitor found it down is not probed: a host that stopped answering would
      // hold the readiness probe for a whole connection timeout.
      const live = members.filter((m) => m.monitor?.primaryDown === undefined)
      if (live.length === 0) return
      const recent = live.reduce((a, b) => (lastUsed(b) > lastUsed(a) ? b : a))
      probes.set(server, await probeHost(recent.primary, engine.closed))
    }),
  )
  const downSince: number[] = []
  const databases = clusters.map((cluster): DatabaseHealth => {
    const host = cluster.primary
    const known = cluster.monitor?.primaryDown
    const replicas = replicasOf(cluster, engine.closed)
    if (known !== undefined) {
      if (!engine.closed && replicas.some((r) => r.inRotation)) downSince.push(known.since)
      return {
        key: cluster.key,
        primary: { ...hostBase(host), role: 'primary', status: 'down', error: known.reason },
        replicas,
      }
    }
    const probe = probes.get(`${host.info.address}:${host.info.port}`)!
    const failed = host.lastConnectError
    const primary: HostHealth = {
      ...hostBase(host),
      role: 'primary',
      status: probe.status === 'up' && failed === undefined ? 'up' : 'down',
      ...(probe.latencyMs === undefined ? {} : { latencyMs: probe.latencyMs }),
      ...(failed !== undefined ? { error: failed } : probe.error === undefined ? {} : { error: probe.error }),
    }
    return { key: cluster.key, primary, replicas }
  })
  const redis = await redisStatus(redisUp)
  // One tenant database down is that tenant's outage, not the process's.
  const up = databases.length === 0 || databases.some((d) => d.primary.status === 'up')
  const first = databases[0]
  // Some tenant databases' primaries down while their replicas serve: the instance serves part of its
  // calls (ADR 0043), as in a fixed placement.
  const degraded: Degraded | undefined =
    downSince.length === 0
      ? undefined
      : {
          reason: 'primary_down',
          since: new Date(Math.min(...downSince)).toISOString(),
          message: `the primary of ${downSince.length} of ${databases.length} tenant databases does not answer (see databases): their reads are served by replicas; their writes and read-your-writes reads fail with KEEL_DB_UNAVAILABLE`,
        }
  return {
    status: engine.closed ? 'down' : up ? 'up' : 'down',
    primary: first?.primary ?? noDatabaseYet(engine.closed),
    replicas: first?.replicas ?? [],
    databases,
    servers: Object.entries(placements.registry.budgets()).map(([server, b]) => ({ server, ...b })),
    tenants,
    cache: { redis },
    ...(degraded === undefined ? {} : { degraded }),
  }
}

async function redisStatus(up: Promise<boolean> | undefined): Promise<'up' | 'down' | 'not configured'> {
  return up === undefined ? 'not configured' : (await up) ? 'up' : 'down'
}

function lastUsed(cluster: Cluster): number {
  return cluster.primary.slots?.lastUsedAt ?? 0
}

function replicasOf(cluster: Cluster, closed: boolean): ReplicaHealth[] {
  return cluster.replicas.map((host): ReplicaHealth => {
    const state = cluster.monitor?.stateOf(host)
    return {
      ...hostBase(host),
      role: 'replica',
      status: state?.up === true && !closed ? 'up' : 'down',
      inRotation: state?.inRotation === true && !closed,
      lagMs: state?.lagMs === undefined || !Number.isFinite(state.lagMs) ? null : Math.round(state.lagMs),
      replayLsn: state?.replayLsn === undefined ? null : formatLsn(state.replayLsn),
      ...(state?.lastError === undefined ? {} : { error: state.lastError }),
    }
  })
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
    pool: {
      total: pool.totalCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
      ...(host.slots === undefined ? {} : { budget: host.slots.snapshot() }),
    },
  }
}

/** The tenant limiter's name for the probe: no tenant id can take it (ids are validated). */
const HEALTH_TENANT = '\u0000keel:health'

// pg's per-query query_timeout (not in @types/pg's QueryConfig); the pool drops a client that hit it.
const HEALTH_PROBE = { text: 'SELECT 1', query_timeout: 2_000 }

async function probeHost(host: HostPool, closed: boolean): Promise<HostHealth> {
  const started = performance.now()
  const base = { ...hostBase(host), role: host.info.role }
  try {
    if (closed) throw new KeelError('KEEL_CLOSED', 'this keel instance is closed')
    // Bounded: a stopped host would keep readiness waiting forever on an idle connection.
    if (host.slots === undefined) await host.pool.query({ ...HEALTH_PROBE })
    else {
      // A governed pool opens connections only within the server's budget: the probe takes its turn.
      const lease = await host.lease(HEALTH_TENANT, 1, HEALTH_PROBE.query_timeout)
      try {
        await lease.client.query({ ...HEALTH_PROBE })
      } finally {
        lease.release()
      }
    }
    return { ...base, status: 'up', latencyMs: Math.round((performance.now() - started) * 100) / 100 }
  } catch (error) {
    return { ...base, status: 'down', error: error instanceof Error ? error.message : String(error) }
  }
}
