import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis'

/** How keel names a Redis (ADR 0039): the parsed `cache.redis` / `jobs.redis`, minus keel's own options. */
export type RedisTopology =
  | { readonly url: string }
  | { readonly cluster: readonly string[] }
  | { readonly sentinels: readonly string[]; readonly name: string; readonly password?: string | undefined }
  | { readonly client: Redis | Cluster }

/** The connection options keel sets per use (the cache's, a producer's, a worker's). */
export interface ConnectionOptions {
  readonly maxRetriesPerRequest: number | null
  readonly enableOfflineQueue?: boolean
  readonly lazyConnect?: boolean
  readonly connectTimeout?: number
  readonly disconnectTimeout?: number
  /** Delay before the next reconnect attempt (ms), as ioredis's `retryStrategy`. */
  readonly retryStrategy?: (times: number) => number | null
  /** ioredis's `autoResubscribe`; off where the caller subscribes again itself. */
  readonly autoResubscribe?: boolean
}

/**
 * A connection keel opened: a `Redis`, or a `Cluster` typed as one. keel uses only the command surface
 * both share (commands, `defineCommand`, `sendCommand`, `multi`, pub/sub, `status`, `quit`, `duplicate`),
 * so the cache and jobs code is the same on every topology; `isCluster` tells them apart where the key
 * layout differs (BullMQ's queue names, ADR 0039).
 */
export type RedisConnection = Redis

export function isClusterTopology(topology: RedisTopology): boolean {
  if ('cluster' in topology) return true
  return 'client' in topology && isClusterClient(topology.client)
}

/** Whether an ioredis instance is a Cluster (duck-typed: the app's ioredis may be another copy). */
export function isClusterClient(client: unknown): boolean {
  return (client as { isCluster?: unknown } | null)?.isCluster === true
}

/** host, port and credentials of a `redis://` / `rediss://` URL. */
function parseUrl(value: string): { host: string; port: number } & RedisOptions {
  const url = new URL(value)
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 6379 : Number(url.port),
    ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  }
}

/**
 * Opens one connection on any topology, with keel's options for its use. The one place that knows the
 * four forms: the cache (RedisTier) and jobs (JobsRedis) both open their connections here, and close
 * them; an app's own `client` is only ever duplicated, never used or closed by keel.
 */
export function openRedis(topology: RedisTopology, options: ConnectionOptions): RedisConnection {
  const { retryStrategy, ...rest } = options
  const perNode: RedisOptions = {
    ...rest,
    ...(retryStrategy === undefined ? {} : { retryStrategy }),
  }
  if ('url' in topology) return new Redis(topology.url, perNode)
  if ('sentinels' in topology) {
    const [first] = topology.sentinels.map(parseUrl)
    return new Redis({
      ...perNode,
      sentinels: topology.sentinels.map((s) => {
        const { host, port } = parseUrl(s)
        return { host, port }
      }),
      name: topology.name,
      ...(topology.password === undefined ? {} : { password: topology.password }),
      ...(first?.username === undefined ? {} : { sentinelUsername: first.username }),
      ...(first?.password === undefined ? {} : { sentinelPassword: first.password }),
      ...(first?.tls === undefined ? {} : { sentinelTLS: first.tls, enableTLSForSentinelMode: true }),
      // Sentinel's answer is where the master is now: asked again on every reconnect, so a failover is
      // followed; a connection to a demoted master is dropped when Redis says READONLY.
      reconnectOnError: (error) => error.message.startsWith('READONLY'),
    })
  }
  if ('cluster' in topology) {
    const nodes = topology.cluster.map(parseUrl)
    const { host: _host, port: _port, ...credentials } = nodes[0]!
    return new Cluster(
      nodes.map(({ host, port }) => ({ host, port })),
      clusterOptions({ ...perNode, ...credentials }, options),
    ) as unknown as RedisConnection
  }
  const client = topology.client
  if (isClusterClient(client)) {
    const cluster = client as Cluster
    const base = cluster.options
    return cluster.duplicate(
      [],
      clusterOptions({ ...base.redisOptions, ...perNode }, options, base),
    ) as unknown as RedisConnection
  }
  return (client as Redis).duplicate(perNode)
}

function clusterOptions(
  redisOptions: RedisOptions,
  options: ConnectionOptions,
  base: ClusterOptions = {},
): ClusterOptions {
  const { retryStrategy: _perNodeRetry, ...nodeOptions } = redisOptions
  return {
    ...base,
    // Each node connection reconnects by itself only through the cluster: the cluster decides.
    redisOptions: { ...nodeOptions, maxRetriesPerRequest: options.maxRetriesPerRequest },
    ...(options.enableOfflineQueue === undefined ? {} : { enableOfflineQueue: options.enableOfflineQueue }),
    ...(options.lazyConnect === undefined ? {} : { lazyConnect: options.lazyConnect }),
    ...(options.retryStrategy === undefined ? {} : { clusterRetryStrategy: options.retryStrategy }),
    // A failover moves slots: ask the cluster where they are now, soon after a node is lost.
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    slotsRefreshTimeout: 1_000,
    // Commands of a node that is gone are redirected or failed by keel's own deadlines.
    maxRedirections: 16,
  }
}
