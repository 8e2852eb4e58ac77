import type pg from 'pg'
import type { Logger } from '../config/config-schema.js'
import type { KeelError } from '../errors.js'
import { ConnectionGovernor, type GovernorSnapshot } from '../pool/connection-governor.js'
import { type HostConfig, type HostInfo, hostInfo } from '../pool/host-info.js'
import { HostPool, type PoolSettings } from '../pool/host-pool.js'
import { Cluster } from '../routing/cluster.js'
import { type MonitorOptions, ReplicaMonitor, type ReplicaState } from '../routing/replica-monitor.js'

export type ReplicaConfig = HostConfig & { name?: string | undefined }

export interface RegistryOptions {
  readonly settings: PoolSettings
  readonly logger: Logger | undefined
  readonly onThrottled: (tenantId: string, limit: number, host: HostInfo) => void
  /** Run on each new connection of a cluster made for rls placements (the bypass-role check). */
  readonly rlsGuard: ((client: pg.ClientBase) => Promise<void>) | undefined
  readonly monitor: MonitorOptions
  /** `database` mode: connections per server (host:port); undefined leaves each pool its own max. */
  readonly maxConnections: number | undefined
  /** A call gave up waiting for a server's budget. */
  readonly onBudgetExhausted?: ((governor: ConnectionGovernor) => void) | undefined
}

/**
 * The clusters keel serves, built on demand and shared: every placement naming the same database on
 * the same server gets the same Cluster (its pools), every database on the same servers the same
 * replica monitor, and every pool on one server the same connection governor (ADR 0033).
 */
export class ClusterRegistry {
  readonly #options: RegistryOptions
  readonly #clusters = new Map<string, Cluster>()
  readonly #monitors = new Map<string, ReplicaMonitor>()
  readonly #governors = new Map<string, ConnectionGovernor>()
  #ended = false

  constructor(options: RegistryOptions) {
    this.#options = options
  }

  /** The cluster of `primary`'s database (with those replicas), made on first use. */
  cluster(primary: HostConfig, replicas: readonly ReplicaConfig[], rls: boolean): Cluster {
    const info = hostInfo(primary, 'primary', 'primary')
    const key = `${info.address}:${info.port}/${info.database}${rls ? '#rls' : ''}|${primary.user ?? ''}|${replicas
      .map((r) => serverOf(hostInfo(r, '', 'replica')))
      .join(',')}`
    let cluster = this.#clusters.get(key)
    if (cluster !== undefined) return cluster
    const pool = (config: HostConfig, name: string, role: HostInfo['role']) =>
      new HostPool(config, this.#options.settings, {
        name,
        role,
        logger: this.#options.logger,
        onThrottled: this.#options.onThrottled,
        onConnect: rls ? this.#options.rlsGuard : undefined,
        governor: this.#governor(hostInfo(config, name, role)),
      })
    const primaryPool = pool(primary, 'primary', 'primary')
    const replicaPools = replicas.map(({ name, ...config }, i) =>
      pool(config, name ?? `replica${i + 1}`, 'replica'),
    )
    const monitor = replicas.length === 0 ? undefined : this.#monitor(primary, replicas, replicaPools)
    monitor?.primaries.add(primaryPool)
    if (monitor?.primaryDown !== undefined) primaryPool.down = monitor.primaryDown
    cluster = new Cluster(`${info.address}:${info.port}/${info.database}`, primaryPool, replicaPools, monitor)
    this.#clusters.set(key, cluster)
    return cluster
  }

  clusters(): Cluster[] {
    return [...this.#clusters.values()]
  }

  /** Every replica server's state, across monitors (lag metrics, health). */
  replicaStates(): ReplicaState[] {
    return [...this.#monitors.values()].flatMap((m) => m.replicas)
  }

  /** `database` mode: each server's budget, keyed `address:port`. */
  budgets(): Record<string, GovernorSnapshot> {
    const out: Record<string, GovernorSnapshot> = {}
    for (const [server, governor] of this.#governors) out[server] = governor.snapshot()
    return out
  }

  get ended(): boolean {
    return this.#ended
  }

  async end(abandon?: KeelError): Promise<void> {
    this.#ended = true
    await Promise.all([...this.#monitors.values()].map((m) => m.close()))
    await Promise.all([...this.#clusters.values()].map((c) => c.end(abandon)))
  }

  #governor(info: HostInfo): ConnectionGovernor | undefined {
    const max = this.#options.maxConnections
    if (max === undefined) return undefined
    const server = serverOf(info)
    let governor = this.#governors.get(server)
    if (governor === undefined) {
      governor = new ConnectionGovernor(server, max, this.#options.onBudgetExhausted)
      this.#governors.set(server, governor)
    }
    return governor
  }

  /**
   * One monitor per server topology (primary and replica servers): replay positions and lag are the
   * server's, whatever the database. Its probes connect to the first database seen there and count
   * against each server's budget.
   */
  #monitor(
    primary: HostConfig,
    replicas: readonly ReplicaConfig[],
    pools: readonly HostPool[],
  ): ReplicaMonitor {
    const primaryInfo = hostInfo(primary, 'primary', 'primary')
    const infos = replicas.map((r) => hostInfo(r, '', 'replica'))
    const key = [primaryInfo, ...infos].map(serverOf).join(',')
    const existing = this.#monitors.get(key)
    if (existing !== undefined) {
      existing.attach(pools)
      return existing
    }
    const monitor = new ReplicaMonitor(
      { config: primary },
      replicas.map(({ name: _name, ...config }, i) => ({ host: pools[i]!, config })),
      this.#options.monitor,
    )
    this.#governor(primaryInfo)?.reserve(1)
    for (const info of infos) this.#governor(info)?.reserve(1)
    this.#monitors.set(key, monitor)
    void monitor.start()
    return monitor
  }
}

function serverOf(info: HostInfo): string {
  return `${info.address}:${info.port}`
}
