import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

// The stack's replicas cancel a query that blocks WAL replay for more than 5 s
// (max_standby_streaming_delay): SQLSTATE 40001, "canceling statement due to conflict with recovery".
const table = 'conflict_items'
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
let keel: Keel

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  keel = testKeel({ replicas: ['replica1'], telemetry: { tracerProvider: provider } })
  await waitFor('replica1 in rotation', async () => (await keel.health()).replicas[0]?.inRotation === true)
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

describe('recovery conflicts', () => {
  it('a read the replica cancels for a recovery conflict is retried on another host and succeeds', async () => {
    const read = keel
      .tenant('acme')
      .query<{ n: number; r: boolean }>(
        `SELECT (SELECT count(*) FROM ${table})::int AS n, pg_is_in_recovery() AS r FROM pg_sleep(7)`,
        [],
        { consistency: 'eventual' },
      )
    await new Promise((r) => setTimeout(r, 500))
    // An ACCESS EXCLUSIVE lock replayed on the replica conflicts with the running read.
    const owner = await connect('owner')
    await owner.query(`ALTER TABLE ${table} ADD COLUMN conflict_marker int`)
    await owner.end()
    const result = await read
    expect(result.rows[0]).toEqual({ n: 0, r: false }) // served, by the primary this time
    const span = exporter.getFinishedSpans().find((s) => s.events.some((e) => e.name === 'keel.retry'))
    expect(span?.events.find((e) => e.name === 'keel.retry')?.attributes).toMatchObject({
      'keel.replica.name': 'replica1',
      'error.type': '40001',
    })
    expect(span?.attributes['keel.route']).toBe('fallback')
    // A conflict is the statement's bad luck, not the replica's fault: it stays in rotation.
    expect((await keel.health()).replicas[0]?.inRotation).toBe(true)
  }, 40_000)
})
