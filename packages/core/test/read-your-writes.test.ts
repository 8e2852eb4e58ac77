import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { encodeToken } from '../src/routing/consistency-token.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

// replica2 replays WAL 1.5 s late (recovery_min_apply_delay): every read right after a write would be
// stale there. Each cycle writes a new version and reads it back at once.
const table = 'ryw_items'
let lagged: Keel
let both: Keel

type Row = { v: number; r: boolean }

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  lagged = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000, pool: { max: 6 } })
  both = testKeel({ replicas: ['replica1', 'replica2'], maxReplicaLagMs: 60_000, pool: { max: 6 } })
  for (const k of [lagged, both]) {
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
  }
})
afterAll(async () => {
  await Promise.all([lagged.close(), both.close()])
  await dropTable(table)
})

async function cycles(keel: Keel, tenant: string, n: number) {
  const db = keel.tenant(tenant)
  await db.query(`INSERT INTO ${table} (tenant_id, n) VALUES ($1, 0)`, [tenant])
  let stale = 0
  let onReplica = 0
  for (let v = 1; v <= n; v++) {
    await db.query(`UPDATE ${table} SET n = $1`, [v])
    const row = (await db.query<Row>(`SELECT n AS v, pg_is_in_recovery() AS r FROM ${table}`)).rows[0]!
    if (row.v !== v) stale++
    if (row.r) onReplica++
    // Now and then a pause, so replicas catch up and the session's reads may use them.
    if (v % 50 === 0) await new Promise((r) => setTimeout(r, 60))
  }
  console.log(`${tenant}: ${n} cycles, ${stale} stale, ${onReplica} reads served by a replica`)
  return { stale, onReplica }
}

describe('read-your-writes', () => {
  it('1,000 write-then-read cycles in one session through the lagged replica: zero stale reads', async () => {
    const { stale } = await cycles(lagged, 'ryw_lagged', 1_000)
    expect(stale).toBe(0)
  })

  it('with a fast and a lagged replica: zero stale reads, and reads use the replica that caught up', async () => {
    const { stale, onReplica } = await cycles(both, 'ryw_both', 1_000)
    expect(stale).toBe(0)
    expect(onReplica).toBeGreaterThan(0)
  })

  it('a session without the token does read stale data from the lagged replica (the check can fail)', async () => {
    const writer = lagged.tenant('ryw_other')
    await writer.query(`INSERT INTO ${table} (tenant_id, n) VALUES ('ryw_other', 0)`)
    await waitFor('the row to reach replica2', async () => {
      const r = await lagged
        .tenant('ryw_other')
        .query<Row>(`SELECT n AS v, pg_is_in_recovery() AS r FROM ${table}`)
      return r.rows[0]?.r === true
    })
    let stale = 0
    for (let v = 1; v <= 20; v++) {
      await writer.query(`UPDATE ${table} SET n = $1`, [v])
      const fresh = lagged.tenant('ryw_other') // no token: free to read any replica
      const row = (await fresh.query<Row>(`SELECT n AS v, pg_is_in_recovery() AS r FROM ${table}`)).rows[0]
      if (row?.v !== v) stale++
    }
    expect(stale).toBeGreaterThan(0)
  })

  it('the token carried to a new client keeps the guarantee; eventual consistency opts out', async () => {
    const writer = lagged.tenant('ryw_token')
    await writer.query(`INSERT INTO ${table} (tenant_id, n) VALUES ('ryw_token', 0)`)
    for (let v = 1; v <= 20; v++) {
      await writer.query(`UPDATE ${table} SET n = $1`, [v])
      const token = writer.consistencyToken
      expect(token).toMatch(/^k1\./)
      const next = lagged.tenant('ryw_token', { consistencyToken: token })
      const row = (await next.query<Row>(`SELECT n AS v FROM ${table}`)).rows[0]
      expect(row?.v).toBe(v)
    }
  })

  it('a transaction commit is tracked too', async () => {
    const db = lagged.tenant('ryw_tx')
    await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} (tenant_id, n) VALUES ('ryw_tx', 7)`)
    })
    const row = (await db.query<Row>(`SELECT n AS v FROM ${table}`)).rows[0]
    expect(row?.v).toBe(7)
  })

  it('garbage or foreign tokens are never an error: that session reads the primary', async () => {
    const foreign = encodeToken({ systemId: '1', timeline: 1 }, 1n)
    for (const consistencyToken of [
      'garbage',
      'k1.1.1',
      foreign,
      'k1.99999999999999999999.1.ffffffffffffffff',
    ]) {
      const db = lagged.tenant('ryw_garbage', { consistencyToken })
      const r = await db.query<Row>('SELECT 1 AS v, pg_is_in_recovery() AS r')
      expect(r.rows[0]?.r).toBe(false)
    }
    const db = lagged.tenant('ryw_garbage', { consistencyToken: 42 as never })
    expect((await db.query<Row>('SELECT 1 AS v, pg_is_in_recovery() AS r')).rows[0]?.r).toBe(false)
  })

  it('a table the lagged replica has not replayed yet: the read falls back to the primary', async () => {
    const fresh = 'ryw_new_table'
    await createRlsTable(fresh)
    try {
      const r = await lagged
        .tenant('acme')
        .query<Row>(`SELECT count(*)::int AS v, pg_is_in_recovery() AS r FROM ${fresh}`)
      expect(r.rows[0]).toEqual({ v: 0, r: false })
      // A real mistake still fails, after the primary confirms it.
      await expect(lagged.tenant('acme').query('SELECT * FROM no_such_table_anywhere')).rejects.toMatchObject(
        {
          code: '42P01',
        },
      )
    } finally {
      await dropTable(fresh)
    }
  })

  it('without writes, a session reads replicas and has no token', async () => {
    const db = lagged.tenant('ryw_reader')
    expect((await db.query<Row>('SELECT 1 AS v, pg_is_in_recovery() AS r')).rows[0]?.r).toBe(true)
    expect(db.consistencyToken).toBeUndefined()
  })
})
