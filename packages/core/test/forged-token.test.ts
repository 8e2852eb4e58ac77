import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// A consistency token names the cluster (its system id is in every response header) and a WAL
// position. One beyond the primary's current position cannot come from a real write: it is garbage,
// served by one primary read, and never echoed back.

const table = 'forged_token_items'
const exporter = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const keels: Keel[] = []

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
})
afterEach(async () => {
  await Promise.all(keels.splice(0).map((k) => k.close()))
})
afterAll(() => dropTable(table))

function replicaKeel(replicaPollMs = 100): Keel {
  const k = testKeel({
    telemetry: { tracerProvider },
    replicas: ['replica1', 'replica2'],
    maxReplicaLagMs: 60_000,
    replicaPollMs,
  })
  keels.push(k)
  return k
}

async function inRotation(k: Keel): Promise<void> {
  await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
}

/** Where one read's statements ran: each replica it tried (span events) and where it was served. */
function attempts(span: ReadableSpan): { replicasTried: string[]; route: unknown; port: unknown } {
  return {
    replicasTried: span.events
      .filter((e) => e.name === 'keel.replica_behind' || e.name === 'keel.retry')
      .map((e) => String(e.attributes?.['keel.replica.name'])),
    route: span.attributes['keel.route'],
    port: span.attributes['server.port'],
  }
}

const readSpans = () => exporter.getFinishedSpans().filter((s) => s.name.startsWith('SELECT'))

describe('a forged consistency token', () => {
  it('beyond the primary WAL position: one primary read, no replica attempt, not echoed', async () => {
    const k = replicaKeel()
    await inRotation(k)
    const writer = k.tenant('acme')
    await writer.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', 'x')`)
    const real = writer.consistencyToken!
    const [, systemId, timeline] = real.split('.')
    const forged = `k1.${systemId}.${timeline}.ffffffffffffffff`

    exporter.reset()
    const db = k.tenant('acme', { consistencyToken: forged })
    const first = await db.query<{ port: number }>('SELECT inet_server_port() AS port')
    expect(first.rows[0]?.port).toBe(readStack().primary.port)
    expect(db.consistencyToken).toBeUndefined()
    // The session does not adopt it: later reads do not try replicas for it either.
    await db.query('SELECT inet_server_port() AS port')
    expect(db.consistencyToken).toBeUndefined()
    const spans = readSpans()
    expect(spans.map(attempts)).toEqual([
      { replicasTried: [], route: 'fallback', port: readStack().primary.port },
      { replicasTried: [], route: 'fallback', port: readStack().primary.port },
    ])
  })

  it('a real token newer than the last poll is kept: the primary is asked again before calling it garbage', async () => {
    const writerKeel = replicaKeel()
    await inRotation(writerKeel)
    // This instance polls once a minute: its picture of the primary predates the write below.
    const reader = replicaKeel(60_000)
    await inRotation(reader)
    const writer = writerKeel.tenant('globex')
    await writer.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'fresh')`)
    const token = writer.consistencyToken!

    const db = reader.tenant('globex', { consistencyToken: token })
    const rows = await db.query<{ body: string }>(`SELECT body FROM ${table} WHERE body = 'fresh'`)
    expect(rows.rows.map((r) => r.body)).toEqual(['fresh'])
    expect(db.consistencyToken).toBe(token)
  })
})
