import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

const table = 'route_items'
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
let keel: Keel

type Where = { r: boolean }
const onReplica = async (p: Promise<{ rows: Where[] }>) => (await p).rows[0]?.r

beforeAll(async () => {
  await createRlsTable(table)
  const owner = await connect('owner')
  // A function that writes: looks like a read to any SQL classifier; only the replica's 25006 tells.
  await owner.query(`CREATE OR REPLACE FUNCTION route_bump(t text) RETURNS boolean LANGUAGE sql VOLATILE AS
    $$ INSERT INTO ${table} (tenant_id, body) VALUES (t, t || ':fn') RETURNING pg_is_in_recovery() $$`)
  await owner.end()
  await awaitOnReplicas(table)
  await awaitOnReplicas('route_bump', 'to_regproc')
  keel = testKeel({ replicas: ['replica1'], telemetry: { tracerProvider: provider } })
  await waitFor('replica1 in rotation', async () => (await keel.health()).replicas[0]?.inRotation === true)
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
  const owner = await connect('owner')
  await owner.query('DROP FUNCTION IF EXISTS route_bump(text)')
  await owner.end()
})

describe('read/write routing', () => {
  it('sends plain reads to a replica', async () => {
    expect(await onReplica(keel.tenant('acme').query<Where>('SELECT pg_is_in_recovery() AS r'))).toBe(true)
    expect(
      await onReplica(
        keel.tenant('acme').query<Where>('WITH x AS (SELECT 1) SELECT pg_is_in_recovery() AS r FROM x'),
      ),
    ).toBe(true)
  })

  it('sends writes, locking reads, sequences and uncertain statements to the primary', async () => {
    const db = keel.tenant('acme')
    expect(
      await onReplica(
        db.query<Where>(
          `INSERT INTO ${table} (tenant_id) VALUES ('acme') RETURNING pg_is_in_recovery() AS r`,
        ),
      ),
    ).toBe(false)
    expect(
      await onReplica(db.query<Where>(`SELECT pg_is_in_recovery() AS r FROM ${table} LIMIT 1 FOR UPDATE`)),
    ).toBe(false)
    expect(
      await onReplica(db.query<Where>(`SELECT pg_is_in_recovery() AS r FROM ${table} LIMIT 1 FOR SHARE`)),
    ).toBe(false)
    expect(
      await onReplica(
        db.query<Where>(
          `WITH d AS (DELETE FROM ${table} WHERE false RETURNING 1) SELECT pg_is_in_recovery() AS r`,
        ),
      ),
    ).toBe(false)
    expect(
      await onReplica(db.query<Where>('SELECT pg_is_in_recovery() AS r, pg_try_advisory_xact_lock(42)')),
    ).toBe(false)
  })

  it('honours route: primary and consistency: strong', async () => {
    const db = keel.tenant('acme')
    expect(
      await onReplica(db.query<Where>('SELECT pg_is_in_recovery() AS r', [], { route: 'primary' })),
    ).toBe(false)
    expect(
      await onReplica(db.query<Where>('SELECT pg_is_in_recovery() AS r', [], { consistency: 'strong' })),
    ).toBe(false)
    expect(
      await onReplica(db.query<Where>('SELECT pg_is_in_recovery() AS r', [], { consistency: 'eventual' })),
    ).toBe(true)
  })

  it('runs every statement of a transaction on the primary', async () => {
    const seen = await keel.tenant('acme').transaction(async (tx) => {
      const a = await tx.query<Where>('SELECT pg_is_in_recovery() AS r')
      const b = await tx.query<Where>('SELECT pg_is_in_recovery() AS r')
      return [a.rows[0]?.r, b.rows[0]?.r]
    })
    expect(seen).toEqual([false, false])
  })

  it('retries a statement the replica refuses (25006) on the primary, once, and remembers it as a write', async () => {
    const db = keel.tenant('fn_tenant')
    expect(await onReplica(db.query<Where>("SELECT route_bump('fn_tenant') AS r"))).toBe(false)
    expect(await onReplica(db.query<Where>("SELECT route_bump('fn_tenant') AS r"))).toBe(false)
    const rows = await db.query(`SELECT 1 FROM ${table}`, [], { route: 'primary' })
    expect(rows.rowCount).toBe(2)
  })

  it('serves at least 90% of reads from replicas when nothing is written', async () => {
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        onReplica(keel.tenant(`t${i % 10}`).query<Where>('SELECT pg_is_in_recovery() AS r')),
      ),
    )
    const share = results.filter(Boolean).length / results.length
    expect(share).toBeGreaterThanOrEqual(0.9)
  })

  it('labels spans with keel.route and the host that served them', async () => {
    exporter.reset()
    await keel.tenant('acme').query('SELECT 1 AS one')
    await keel.tenant('acme').query(`INSERT INTO ${table} (tenant_id) VALUES ('acme')`)
    const [read, write] = exporter.getFinishedSpans()
    expect(read?.attributes['keel.route']).toBe('replica')
    expect(read?.attributes['keel.replica.name']).toBe('replica1')
    expect(write?.attributes['keel.route']).toBe('primary')
  })

  it('reports each replica in health(): up, in rotation, lag', async () => {
    const health = await keel.health()
    expect(health.replicas).toHaveLength(1)
    expect(health.replicas[0]).toMatchObject({
      name: 'replica1',
      role: 'replica',
      status: 'up',
      inRotation: true,
    })
    expect(health.replicas[0]?.lagMs).toBeGreaterThanOrEqual(0)
    expect(health.replicas[0]?.replayLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
  })
})
