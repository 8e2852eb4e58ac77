import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack, stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

const table = 'fault_items'
let keel: Keel
const port = (name: string) => readStack().replicas.find((r) => r.name === name)!.port

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
})
afterEach(async () => {
  await keel?.close()
  // Leave the stack whole for the next suite, whatever happened here.
  await stackCtl('start', 'replica1')
  await stackCtl('start', 'replica2')
})
afterAll(() => dropTable(table))

/** Readers in a loop until stopped; counts where each read ran and every failure. */
function readLoad(k: Keel, readers: number) {
  const served = new Map<number, number>()
  const failures: unknown[] = []
  let stop = false
  const done = Promise.all(
    Array.from({ length: readers }, async (_, i) => {
      const db = k.tenant(`reader${i}`)
      while (!stop) {
        try {
          const r = await db.query<{ port: number }>(
            `SELECT inet_server_port() AS port, count(*) FROM ${table}`,
          )
          const p = r.rows[0]!.port
          served.set(p, (served.get(p) ?? 0) + 1)
        } catch (error) {
          failures.push(error)
        }
      }
    }),
  )
  return {
    served,
    failures,
    stop: async () => {
      stop = true
      await done
    },
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('replica faults', () => {
  it.each([
    ['stopped (fast shutdown)', 'stop' as const],
    ['killed (SIGKILL)', 'kill' as const],
  ])(
    'a replica %s in the middle of a read load: zero failed reads, then back in rotation',
    async (_label, how) => {
      keel = testKeel({
        replicas: ['replica1', 'replica2'],
        maxReplicaLagMs: 60_000,
        replicaPollMs: 100,
        pool: { max: 8 },
      })
      await waitFor('replicas in rotation', async () =>
        (await keel.health()).replicas.every((r) => r.inRotation),
      )
      const load = readLoad(keel, 8)
      await sleep(400)
      await stackCtl(how, 'replica1')
      await sleep(800)
      const duringOutage = (await keel.health()).replicas.find((r) => r.name === 'replica1')
      expect(duringOutage).toMatchObject({ status: 'down', inRotation: false })
      const servedByReplica1Before = load.served.get(port('replica1')) ?? 0
      await stackCtl('start', 'replica1')
      await waitFor('replica1 back in rotation', async () =>
        (await keel.health()).replicas.some((r) => r.name === 'replica1' && r.inRotation),
      )
      await waitFor(
        'reads on replica1 again',
        () => (load.served.get(port('replica1')) ?? 0) > servedByReplica1Before + 20,
      )
      await load.stop()
      expect(load.failures.slice(0, 3).map(String)).toEqual([])
      expect(servedByReplica1Before).toBeGreaterThan(0)
    },
  )

  it('both replicas down: reads fall back to the primary, none fails', async () => {
    keel = testKeel({ replicas: ['replica1', 'replica2'], maxReplicaLagMs: 60_000, replicaPollMs: 100 })
    await waitFor('replicas in rotation', async () =>
      (await keel.health()).replicas.every((r) => r.inRotation),
    )
    const load = readLoad(keel, 4)
    await sleep(200)
    await Promise.all([stackCtl('kill', 'replica1'), stackCtl('stop', 'replica2')])
    await sleep(500)
    const primaryBefore = load.served.get(readStack().primary.port) ?? 0
    await sleep(300)
    await load.stop()
    expect(load.failures).toEqual([])
    expect(load.served.get(readStack().primary.port) ?? 0).toBeGreaterThan(primaryBefore)
    const health = await keel.health()
    expect(health.status).toBe('up')
    expect(health.replicas.every((r) => !r.inRotation)).toBe(true)
  })

  it('a replica lagging past maxReplicaLagMs leaves rotation and returns once it catches up', async () => {
    keel = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 400, replicaPollMs: 50 })
    await waitFor('replica2 in rotation', async () => (await keel.health()).replicas[0]?.inRotation === true)
    const writer = keel.tenant('lagger')
    let ejected = false
    // replica2 applies WAL 1.5 s late: under steady writes its lag passes 400 ms.
    const deadline = Date.now() + 10_000
    while (!ejected && Date.now() < deadline) {
      await writer.query(`INSERT INTO ${table} (tenant_id) VALUES ('lagger')`)
      await sleep(20)
      const r = (await keel.health()).replicas[0]
      ejected = r?.inRotation === false && r.status === 'up'
    }
    expect(ejected).toBe(true)
    const lagged = (await keel.health()).replicas[0]
    expect(lagged?.lagMs).toBeGreaterThan(400)
    // Writes stop: it replays the backlog and comes back.
    await waitFor(
      'replica2 back in rotation',
      async () => (await keel.health()).replicas[0]?.inRotation === true,
    )
  })
})
