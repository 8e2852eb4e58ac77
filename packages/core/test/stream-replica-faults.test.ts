import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// A replica serving a stream goes away mid-stream: that stream fails (rows were already delivered, so
// it is not retried), and the next streams are served elsewhere (the replica marked down, the read on
// the primary) until it is back.
const table = 'stream_replica_faults'
let keel: Keel

beforeAll(async () => {
  await createRlsTable(table)
  const su = await connect('super')
  await su.query(`INSERT INTO ${table} (tenant_id, n) SELECT 'acme', g FROM generate_series(1, 3000) g`)
  await su.end()
  await awaitOnReplicas(table)
  await waitFor('rows on replica1', async () => {
    const k = testKeel({ replicas: ['replica1'] })
    try {
      const r = await k.tenant('acme').query<{ c: number }>(`SELECT count(*)::int AS c FROM ${table}`)
      return r.rows[0]!.c === 3000
    } finally {
      await k.close()
    }
  })
  keel = testKeel({ replicas: ['replica1'], pool: { max: 4 }, replicaPollMs: 200 })
  await waitFor('replica in rotation', async () => (await keel.health()).replicas.every((r) => r.inRotation))
}, 120_000)
afterAll(async () => {
  await stackCtl('start', 'replica1')
  await keel.close()
  await dropTable(table)
}, 120_000)

describe('db.stream() when its replica stops', () => {
  it('the stream on the stopped replica fails; the next ones are served by the primary; scope holds', async () => {
    const db = keel.tenant('acme')
    let onReplica = false
    const failure = await (async () => {
      let n = 0
      for await (const row of db.stream<{ r: boolean }>(
        `SELECT pg_is_in_recovery() AS r, n FROM ${table}`,
        [],
        {
          batchSize: 100,
          consistency: 'eventual',
        },
      )) {
        if (++n === 1) {
          onReplica = row.r
          await stackCtl('stop', 'replica1')
        }
      }
    })().catch((error: unknown) => error)
    expect(onReplica).toBe(true)
    expect(failure).toBeInstanceOf(Error)
    for (let i = 0; i < 3; i++) {
      let rows = 0
      let recovery = true
      for await (const row of db.stream<{ r: boolean; tenant_id: string }>(
        `SELECT pg_is_in_recovery() AS r, tenant_id FROM ${table}`,
        [],
        { consistency: 'eventual' },
      )) {
        expect(row.tenant_id).toBe('acme')
        recovery = row.r
        rows++
      }
      expect({ rows, recovery }).toEqual({ rows: 3000, recovery: false })
    }
  }, 120_000)
})
