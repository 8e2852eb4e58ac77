import { Cluster, Redis } from 'ioredis'
import type {
  KeelStackTopologies,
  StackRedisCluster,
  StackRedisSentinel,
} from '../../../../scripts/stack/client.mjs'
import { readStack, stackCtl } from './stack.js'
import { waitFor } from './wait.js'

/** The stack's Redis Cluster, started on demand (`stack.mjs up redis-cluster`). */
export async function redisCluster(): Promise<StackRedisCluster> {
  await stackCtl('up', 'redis-cluster')
  const cluster = (readStack() as KeelStackTopologies).redisCluster
  if (cluster === undefined) throw new Error('stack.mjs up redis-cluster did not record the cluster')
  return cluster
}

/** The stack's Sentinel setup, started on demand (`stack.mjs up redis-sentinel`). */
export async function redisSentinel(): Promise<StackRedisSentinel> {
  await stackCtl('up', 'redis-sentinel')
  const sentinel = (readStack() as KeelStackTopologies).redisSentinel
  if (sentinel === undefined) throw new Error('stack.mjs up redis-sentinel did not record its nodes')
  return sentinel
}

const hostPort = (url: string) => ({ host: new URL(url).hostname, port: Number(new URL(url).port) })

/** A test's own cluster client, to look at keys and find masters. */
export function clusterClient(cluster: StackRedisCluster): Cluster {
  const client = new Cluster(cluster.urls.map(hostPort), {
    redisOptions: { maxRetriesPerRequest: 1 },
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
  })
  client.on('error', () => undefined)
  return client
}

/** A test's own client of the Sentinel-managed master. */
export function sentinelClient(sentinel: StackRedisSentinel): Redis {
  const client = new Redis({
    sentinels: sentinel.sentinels.map(hostPort),
    name: sentinel.name,
    maxRetriesPerRequest: 1,
  })
  client.on('error', () => undefined)
  return client
}

/** `CLUSTER NODES` of the first node that answers, as { port, master, slots } per node. */
export async function clusterNodes(
  cluster: StackRedisCluster,
): Promise<Array<{ port: number; master: boolean; failed: boolean; ranges: Array<[number, number]> }>> {
  for (const node of cluster.nodes) {
    const client = new Redis(node.port, '127.0.0.1', {
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      lazyConnect: true,
    })
    client.on('error', () => undefined)
    try {
      await client.connect()
      const text = (await client.cluster('NODES')) as string
      return text
        .trim()
        .split('\n')
        .map((line) => {
          const [, address, flags, , , , , , ...slots] = line.split(' ')
          const port = Number(address!.split('@')[0]!.split(':')[1])
          const ranges = slots
            .filter((s) => !s.startsWith('['))
            .map((s) => {
              const [a, b] = s.split('-')
              return [Number(a), Number(b ?? a)] as [number, number]
            })
          return { port, master: flags!.includes('master'), failed: flags!.includes('fail'), ranges }
        })
    } catch {
      // That node is down: ask the next one.
    } finally {
      client.disconnect()
    }
  }
  throw new Error('no node of the Redis Cluster answered CLUSTER NODES')
}

/** The stack name of the master that serves `slot` now (e.g. `redis-cluster-2`). */
export async function masterOfSlot(cluster: StackRedisCluster, slot: number): Promise<string> {
  const nodes = await clusterNodes(cluster)
  const master = nodes.find((n) => n.master && !n.failed && n.ranges.some(([a, b]) => slot >= a && slot <= b))
  if (master === undefined) throw new Error(`no master serves slot ${slot}`)
  return cluster.nodes.find((n) => n.port === master.port)!.name
}

/** Waits until every slot has a live master again (after a failover), and every node agrees. */
export async function clusterHealed(cluster: StackRedisCluster): Promise<void> {
  await waitFor('every slot served by a live master', async () => {
    const nodes = await clusterNodes(cluster).catch(() => [])
    const covered = nodes
      .filter((n) => n.master && !n.failed)
      .reduce((sum, n) => sum + n.ranges.reduce((s, [a, b]) => s + b - a + 1, 0), 0)
    return covered === 16_384
  })
}

/** Brings every node of the cluster back (the killed one rejoins as a replica) and waits until healed. */
export async function restartCluster(cluster: StackRedisCluster): Promise<void> {
  for (const node of cluster.nodes) await stackCtl('start', node.name as `redis-cluster-${number}`)
  await clusterHealed(cluster)
}

/** The Sentinel-managed master's stack name now (`redis-sentinel-0` or `-1`). */
export async function sentinelMaster(sentinel: StackRedisSentinel): Promise<string> {
  const client = new Redis(hostPort(sentinel.sentinels[0]!).port, '127.0.0.1', { maxRetriesPerRequest: 1 })
  try {
    const [, port] = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', sentinel.name)) as [
      string,
      string,
    ]
    return sentinel.nodes.find((n) => n.port === Number(port))!.name
  } finally {
    client.disconnect()
  }
}

/**
 * Which Redis the jobs suites (jobs, jobs-fairness, jobs-outbox) run on: the stack's single Redis by
 * default, or with `KEEL_TEST_REDIS=cluster` / `sentinel` the on-demand topology, so that the same tests
 * prove keel on each (issue #17). Call {@link ensureTestRedis} in the suite's beforeAll first.
 */
export type TestRedisName = 'single' | 'cluster' | 'sentinel'

export function testRedisName(): TestRedisName {
  const name = process.env.KEEL_TEST_REDIS ?? 'single'
  if (name !== 'single' && name !== 'cluster' && name !== 'sentinel') {
    throw new Error(`KEEL_TEST_REDIS must be single, cluster or sentinel (got ${name})`)
  }
  return name
}

/** Starts the topology KEEL_TEST_REDIS names (on demand), if any. */
export async function ensureTestRedis(): Promise<void> {
  const name = testRedisName()
  if (name === 'cluster') await redisCluster()
  if (name === 'sentinel') await redisSentinel()
}

/** keel's `redis` config for the topology under test. */
export function testRedis(): { url: string } | { cluster: string[] } | { sentinels: string[]; name: string } {
  const stack = readStack() as ReturnType<typeof readStack> & KeelStackTopologies
  switch (testRedisName()) {
    case 'cluster':
      return { cluster: stack.redisCluster!.urls }
    case 'sentinel':
      return { sentinels: stack.redisSentinel!.sentinels, name: stack.redisSentinel!.name }
    default:
      return { url: stack.redis.url }
  }
}

/**
 * A test's own client of the topology under test (for its bookkeeping keys); a Cluster is typed as a
 * Redis, as keel's own factory does: tests use single-key commands only.
 */
export function testRedisClient(): Redis {
  const stack = readStack() as ReturnType<typeof readStack> & KeelStackTopologies
  switch (testRedisName()) {
    case 'cluster':
      return clusterClient(stack.redisCluster!) as unknown as Redis
    case 'sentinel':
      return sentinelClient(stack.redisSentinel!)
    default: {
      const client = new Redis(stack.redis.url, { maxRetriesPerRequest: 1 })
      client.on('error', () => undefined)
      return client
    }
  }
}
