import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel, QueryOptions } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

/**
 * Issue #10 item 10: a write made by a function (`SELECT my_insert_fn(...)`) looks like a read. When it
 * runs on the primary anyway (route 'primary', consistency 'strong'), the session must still learn the
 * WAL position after it, or its next read goes to replica2 (1.5 s behind) and misses the row.
 */
const table = 'rywf_items'
let lagged: Keel

beforeAll(async () => {
  await createRlsTable(table)
  const owner = await connect('owner')
  try {
    await owner.query(
      `CREATE OR REPLACE FUNCTION rywf_insert(body text) RETURNS bigint LANGUAGE sql AS $$
         INSERT INTO ${table} (tenant_id, body) VALUES (current_setting('app.tenant_id'), body) RETURNING id
       $$`,
    )
  } finally {
    await owner.end()
  }
  await awaitOnReplicas(table)
  await awaitOnReplicas('rywf_insert', 'to_regproc')
  lagged = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000, pool: { max: 4 } })
  await waitFor('replica2 in rotation', async () =>
    (await lagged.health()).replicas.every((r) => r.inRotation),
  )
})

afterAll(async () => {
  await lagged?.close()
  const owner = await connect('owner')
  try {
    await owner.query('DROP FUNCTION IF EXISTS rywf_insert(text)')
  } finally {
    await owner.end()
  }
  await dropTable(table)
})

describe('read-your-writes for writes made by a function', () => {
  it.each<[string, QueryOptions]>([
    ["route: 'primary'", { route: 'primary' }],
    ["consistency: 'strong'", { consistency: 'strong' }],
  ])('SELECT my_insert_fn() with %s, then a read in the same session sees the row', async (_, options) => {
    const db = lagged.tenant('rywf_acme')
    for (let i = 0; i < 5; i++) {
      const inserted = await db.query<{ id: string }>('SELECT rywf_insert($1) AS id', [`row-${i}`], options)
      const id = inserted.rows[0]?.id
      const read = await db.query<{ body: string }>(`SELECT body FROM ${table} WHERE id = $1`, [id])
      expect(read.rows).toEqual([{ body: `row-${i}` }])
    }
    expect(db.consistencyToken).toBeDefined()
  })

  it('a plain read on the primary does not move the session position', async () => {
    const db = lagged.tenant('rywf_plain')
    await db.query(`SELECT count(*) FROM ${table}`, [], { route: 'primary' })
    expect(db.consistencyToken).toBeUndefined()
  })
})
