import { afterEach, describe, expect, it } from 'vitest'
import { isKeelError, type Keel, type Logger } from '../src/index.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// A replica whose pool is full is busy, not dead: reads go elsewhere without waiting for it, and it
// stays in rotation (no replica_ejected).

let keel: Keel | undefined

afterEach(async () => {
  await keel?.close()
  keel = undefined
})

function capturingLogger() {
  const records: Array<Record<string, unknown>> = []
  const at = (level: string) => (obj: object, msg?: string) => {
    records.push({ level, msg, ...obj })
  }
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
  return { logger, records }
}

const replica1Port = () => readStack().replicas.find((r) => r.name === 'replica1')!.port
type Port = { port: number }
const PORT_SQL = 'SELECT inet_server_port() AS port'

describe('a saturated replica', () => {
  it('a read that would wait for a full replica pool is served by the primary at once; the replica stays in rotation', async () => {
    const { logger, records } = capturingLogger()
    const k = testKeel({
      replicas: ['replica1'],
      maxReplicaLagMs: 60_000,
      replicaPollMs: 100,
      // Long waits, so a read queued on the replica would still be waiting when the check runs.
      pool: { max: 2, connectionTimeoutMs: 60_000 },
      limits: { acquireTimeoutMs: 60_000 },
      logger,
    })
    keel = k
    await waitFor('replica1 in rotation', async () => (await k.health()).replicas[0]?.inRotation === true)
    const since = records.length
    let sleepersDone = false
    const sleepers = Promise.all(
      ['s1', 's2'].map((t) =>
        k
          .tenant(t)
          .query<Port>('SELECT pg_sleep(2), inet_server_port() AS port', [], { consistency: 'eventual' }),
      ),
    ).finally(() => {
      sleepersDone = true
    })
    await waitFor('both replica1 connections busy', async () => {
      const pool = (await k.health()).replicas[0]!.pool
      return pool.total === 2 && pool.idle === 0
    })
    const read = await k.tenant('s3').query<Port>(PORT_SQL, [], { consistency: 'eventual' })
    const servedWhileBusy = !sleepersDone
    expect(read.rows[0]?.port).toBe(readStack().primary.port)
    expect(servedWhileBusy).toBe(true)
    expect((await sleepers).map((r) => r.rows[0]?.port)).toEqual([replica1Port(), replica1Port()])
    const ejected = records.slice(since).filter((r) => r.signal === 'replica_ejected')
    expect(ejected.map((r) => r.reason)).toEqual([])
    expect((await k.health()).replicas[0]).toMatchObject({ status: 'up', inRotation: true })
  })

  it('when every host is full, a pool timeout on the replica fails the read as KEEL_POOL_TIMEOUT and never ejects it', async () => {
    const { logger, records } = capturingLogger()
    const k = testKeel({
      replicas: ['replica1'],
      maxReplicaLagMs: 60_000,
      replicaPollMs: 100,
      pool: { max: 1, connectionTimeoutMs: 300 },
      limits: { tenantConnections: 1 },
      logger,
    })
    keel = k
    await waitFor('replica1 in rotation', async () => (await k.health()).replicas[0]?.inRotation === true)
    const since = records.length
    const onReplica = k.tenant('r1').query('SELECT pg_sleep(1.5)', [], { consistency: 'eventual' })
    const onPrimary = k.tenant('p1').query('SELECT pg_sleep(1.5)', [], { route: 'primary' })
    await waitFor('both pools full', async () => {
      const h = await k.health()
      return h.replicas[0]!.pool.idle === 0 && h.replicas[0]!.pool.total === 1 && h.primary.pool.total === 1
    })
    const error = await k
      .tenant('r2')
      .query(PORT_SQL, [], { consistency: 'eventual' })
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(isKeelError(error) ? error.code : error).toBe('KEEL_POOL_TIMEOUT')
    await Promise.all([onReplica, onPrimary])
    const ejected = records.slice(since).filter((r) => r.signal === 'replica_ejected')
    expect(ejected.map((r) => r.reason)).toEqual([])
    expect((await k.health()).replicas[0]).toMatchObject({ status: 'up', inRotation: true })
    // And it still serves reads.
    const after = await k.tenant('r3').query<Port>(PORT_SQL, [], { consistency: 'eventual' })
    expect(after.rows[0]?.port).toBe(replica1Port())
  })
})
