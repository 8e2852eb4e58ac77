import { type Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { StackRedisCluster } from '../../../scripts/stack/client.mjs'
import { freshPrefix, sleep } from './support/cache.js'
import { testKeel } from './support/keel.js'
import {
  clusterClient,
  clusterHealed,
  clusterNodes,
  masterOfSlot,
  redisCluster,
  restartCluster,
} from './support/redis-topology.js'
import { stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers, startWorkers, type Worker } from './support/worker.js'

// The cache on a real Redis Cluster (3 masters + 3 replicas, issue #17): several keel instances in this
// process and in others, one loader fleet-wide, tag invalidations seen by all, values keep their types,
// and a master SIGKILLed under a cached-read load costs no call.

/** Holds the node it runs on for ARGV[1] ms (a busy node: every other command waits). */
const SPIN = `local function now() local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000) end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1`

let cluster: StackRedisCluster
let client: Cluster
let dist: string
let workers: Worker[] = []
const keels: Array<ReturnType<typeof testKeel>> = []

function clusterKeel(prefix: string, cache: Record<string, unknown> = {}) {
  const keel = testKeel({
    cache: {
      redis: { cluster: cluster.urls, commandTimeoutMs: 200 },
      prefix,
      jitter: 0,
      breakerResetMs: 200,
      ...cache,
    },
  })
  keels.push(keel)
  return keel
}

beforeAll(async () => {
  cluster = await redisCluster()
  client = clusterClient(cluster)
  dist = buildForWorkers()
})
afterEach(async () => {
  await Promise.all(workers.map((w) => w.close()))
  workers = []
  await Promise.all(keels.splice(0).map((k) => k.close()))
})
afterAll(async () => {
  await restartCluster(cluster)
  client.disconnect()
})

describe('cache on a Redis Cluster', () => {
  it("every key of a tenant's entry lives in one slot, and tenants spread over the masters", async () => {
    const prefix = freshPrefix()
    const keel = clusterKeel(prefix)
    const tenants = Array.from({ length: 12 }, (_, i) => `tenant${i}`)
    for (const t of tenants) await keel.tenant(t).cached({ key: 'k', tags: ['a', 'b'] }, async () => t)
    const keys = await Promise.all(
      cluster.nodes.map(async (n) => {
        const node = client.nodes('master').find((m) => m.options.port === n.port)
        return node === undefined ? [] : node.keys(`${prefix}:*`)
      }),
    )
    const all = keys.flat()
    expect(all.length).toBeGreaterThanOrEqual(tenants.length)
    const slotsByTenant = new Map<string, Set<number>>()
    for (const key of all) {
      const tenant = /\{t:(tenant\d+)\}/.exec(key)![1]!
      const slot = Number(await client.cluster('KEYSLOT', key))
      const set = slotsByTenant.get(tenant) ?? new Set()
      set.add(slot)
      slotsByTenant.set(tenant, set)
    }
    for (const slots of slotsByTenant.values()) expect(slots.size).toBe(1)
    const masters = new Set(keys.map((k, i) => (k.length > 0 ? i : -1)).filter((i) => i >= 0))
    expect(masters.size).toBeGreaterThan(1)
  })

  it('2 instances here and 3 processes, 100 concurrent cold reads each: the loader runs once fleet-wide', async () => {
    const prefix = freshPrefix()
    workers = await startWorkers(3, dist, prefix, { cluster: cluster.urls })
    const local = [clusterKeel(prefix), clusterKeel(prefix)]
    await client.set(`${prefix}:source:hot`, 'v1')
    const loader = async () => {
      const value = await client.get(`${prefix}:source:hot`)
      await client.incr(`${prefix}:loads:hot`)
      await sleep(100)
      return value
    }
    const results = await Promise.all([
      ...workers.map((w) => w.call<string[]>('burst', { key: 'hot', n: 100, delayMs: 100 })),
      ...local.map(async (k) => [
        ...new Set(
          await Promise.all(
            Array.from({ length: 100 }, () => k.tenant('acme').cached({ key: 'hot' }, loader)),
          ),
        ),
      ]),
    ])
    expect(results).toEqual([['v1'], ['v1'], ['v1'], ['v1'], ['v1']])
    expect(Number(await client.get(`${prefix}:loads:hot`))).toBe(1)
  })

  it('a tag invalidated by one instance is seen by every instance and process before it resolves', async () => {
    const prefix = freshPrefix()
    // invalidate() resolves when every subscriber acknowledged, or after invalidationAckTimeoutMs (500 ms
    // by default), whichever comes first. On a busy CI machine an acknowledgement can take longer than
    // that, and the timeout, not the acknowledgements, ends the wait: a long timeout makes this test
    // check what it names (seen by all before it resolves), not how fast the machine is.
    const acks = { invalidationAckTimeoutMs: 15_000 }
    workers = await startWorkers(2, dist, prefix, { cluster: cluster.urls }, acks)
    const local = [clusterKeel(prefix, acks), clusterKeel(prefix, acks)]
    let source = 'v1'
    await client.set(`${prefix}:source:list`, 'v1')
    for (const w of workers) expect(await w.call('get', { key: 'list', tags: ['invoices'] })).toBe('v1')
    for (const k of local) {
      expect(await k.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, async () => source)).toBe(
        'v1',
      )
    }
    source = 'v2'
    await client.set(`${prefix}:source:list`, 'v2')
    await local[0]!.tenant('acme').invalidate({ tags: ['invoices'] })
    for (const w of workers) expect(await w.call('get', { key: 'list', tags: ['invoices'] })).toBe('v2')
    for (const k of local) {
      expect(await k.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, async () => source)).toBe(
        'v2',
      )
    }
    // And from a process to the instances here.
    source = 'v3'
    await client.set(`${prefix}:source:list`, 'v3')
    await workers[0]!.call('invalidate', { tags: ['invoices'] })
    for (const k of local) {
      expect(await k.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, async () => source)).toBe(
        'v3',
      )
    }
  })

  // PUBLISH on a cluster counts only the subscribers of the node it ran on (the tenant's slot owner),
  // while each process subscribes on a node of ioredis's choosing. A process that is slow to drop its
  // copies is stood in for by subscribers that never acknowledge: trusting PUBLISH's count,
  // invalidate() resolved before they were done.
  async function silentSubscribersHoldInvalidate(
    pick: (node: { name: string; port: number }, owner: string) => boolean,
    blockMs = 0,
  ): Promise<void> {
    const prefix = freshPrefix()
    const ackTimeoutMs = 2_000
    const keel = testKeel({
      cache: {
        redis: { cluster: cluster.urls, commandTimeoutMs: 200 },
        prefix,
        jitter: 0,
        invalidationAckTimeoutMs: ackTimeoutMs,
      },
    })
    keels.push(keel)
    await keel.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, async () => 'v1')
    const slot = Number(await client.cluster('KEYSLOT', `${prefix}:{t:acme}:v:list`))
    const owner = await masterOfSlot(cluster, slot)
    const silent = cluster.nodes
      .filter((n) => pick(n, owner))
      .map((n) => new Redis(n.port, '127.0.0.1', { maxRetriesPerRequest: 1 }))
    for (const r of silent) r.on('error', () => undefined)
    const blockers = cluster.nodes
      .filter((n) => blockMs > 0 && pick(n, owner))
      .map((n) => new Redis(n.port, '127.0.0.1', { maxRetriesPerRequest: 1 }))
    try {
      for (const r of silent) await r.subscribe(`${prefix}:events`)
      // A busy node: a script holds it for longer than the command timeout, so its NUMSUB answers late.
      const blocking = blockers.map((r) => r.eval(SPIN, 0, String(blockMs)).catch(() => undefined))
      if (blocking.length > 0) await new Promise((resolve) => setTimeout(resolve, 30))
      const started = performance.now()
      await keel.tenant('acme').invalidate({ tags: ['invoices'] })
      expect(performance.now() - started).toBeGreaterThanOrEqual(ackTimeoutMs - 50)
      await Promise.all(blocking)
    } finally {
      for (const r of [...silent, ...blockers]) r.disconnect()
    }
  }

  it('invalidate() waits for subscribers on every node: one on another node that never acknowledges holds it until the ack timeout', async () => {
    await silentSubscribersHoldInvalidate((n, owner) => n.name !== owner)
  })

  it('a node too busy to answer NUMSUB within the command timeout is waited for, not counted as 0: its silent subscriber holds invalidate() until the ack timeout', async () => {
    await silentSubscribersHoldInvalidate((n, owner) => n.name !== owner, 600)
  })

  it('a subscriber on a replica counts too (after a failover a process can subscribe there): one that never acknowledges holds invalidate() until the ack timeout', async () => {
    const replicaPorts = new Set((await clusterNodes(cluster)).filter((n) => !n.master).map((n) => n.port))
    expect(replicaPorts.size).toBeGreaterThan(0)
    await silentSubscribersHoldInvalidate((n, owner) => n.name !== owner && replicaPorts.has(n.port))
  })

  it('a value written by one instance comes back from the cluster tier with its types', async () => {
    const prefix = freshPrefix()
    const [a, b] = [clusterKeel(prefix), clusterKeel(prefix)]
    const value = {
      at: new Date('2026-12-02T06:00:00.123Z'),
      big: 2n ** 70n,
      map: new Map<string, unknown>([['a', { nested: new Set([1, 2]) }]]),
      bytes: Buffer.from('keel'),
    }
    await a.tenant('acme').cached({ key: 'typed' }, async () => value)
    let loads = 0
    const got = await b.tenant('acme').cached({ key: 'typed' }, async () => {
      loads++
      return value
    })
    expect(loads).toBe(0)
    expect(got.at).toBeInstanceOf(Date)
    expect(got.at.getTime()).toBe(value.at.getTime())
    expect(got.big).toBe(2n ** 70n)
    expect(got.map).toBeInstanceOf(Map)
    expect((got.map.get('a') as { nested: Set<number> }).nested).toEqual(new Set([1, 2]))
    expect(Buffer.from(got.bytes).toString()).toBe('keel')
  })

  it("the tenant's master SIGKILLed under a cached-read load: 0 failed calls; after the promotion the cluster tier works again", async () => {
    const prefix = freshPrefix()
    workers = await startWorkers(2, dist, prefix, { cluster: cluster.urls })
    const [a, b] = workers as [Worker, Worker]
    const slot = Number(await client.cluster('KEYSLOT', `${prefix}:{t:acme}:v:load0`))
    const victim = await masterOfSlot(cluster, slot)
    const loads = workers.map((w) =>
      w.call<{ calls: number; failureCount: number; failures: string[] }>('load', { durationMs: 6_000 }),
    )
    await sleep(500)
    await stackCtl('kill', victim as `redis-cluster-${number}`)
    // A replica takes the slots over (cluster-node-timeout 1 s, then the election).
    await waitFor('a replica promoted for the slot', async () => {
      const master = await masterOfSlot(cluster, slot).catch(() => victim)
      return master !== victim
    })
    await clusterHealed(cluster)
    const results = await Promise.all(loads)
    for (const r of results) {
      expect(r.failures).toEqual([])
      expect(r.calls).toBeGreaterThan(100)
    }
    // Back: a value one process loads is served to the other from the cluster, without loading again.
    await waitFor('the cluster tier to be used again', async () => {
      const key = `after${Date.now()}`
      await client.set(`${prefix}:source:${key}`, 'x')
      try {
        await a.call('get', { key })
        await b.call('get', { key })
      } catch {
        // The workers' own source client may still be finding the new master: try again.
        return false
      }
      return Number(await client.get(`${prefix}:loads:${key}`)) === 1
    })
    await waitFor('the breaker closed in both processes', async () => {
      for (const w of workers) {
        const health = await w.call<{ cache: { redis: string } }>('health')
        if (health.cache.redis !== 'up') return false
      }
      return true
    })
    await stackCtl('start', victim as `redis-cluster-${number}`)
  })
})
