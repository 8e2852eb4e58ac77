import { context, SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'

const table = 'otel_items'
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const contextManager = new AsyncLocalStorageContextManager()
let keel: Keel

beforeAll(async () => {
  context.setGlobalContextManager(contextManager.enable())
  await createRlsTable(table)
  keel = testKeel({ telemetry: { tracerProvider: provider } })
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
  context.disable()
})
beforeEach(() => exporter.reset())

const spans = (): ReadableSpan[] => exporter.getFinishedSpans()

describe('telemetry', () => {
  it('emits a CLIENT span per query with the database semantic conventions', async () => {
    const { primary } = readStack()
    await keel.tenant('acme').query(`SELECT * FROM ${table} WHERE body = $1 AND n > 41`, ['secret-value'])
    const [span] = spans()
    expect(span?.name).toBe('SELECT keel')
    expect(span?.kind).toBe(SpanKind.CLIENT)
    expect(span?.attributes).toMatchObject({
      'db.system.name': 'postgresql',
      'db.namespace': 'keel',
      'db.operation.name': 'SELECT',
      'server.address': primary.host,
      'server.port': primary.port,
      'keel.tenant.id': 'acme',
    })
    // Parameterized text; inline literals are masked; bound values never appear.
    expect(span?.attributes['db.query.text']).toBe(`SELECT * FROM ${table} WHERE body = $1 AND n > ?`)
    expect(JSON.stringify(span?.attributes)).not.toContain('secret-value')
    expect(JSON.stringify(span?.attributes)).not.toContain(':app@')
  })

  it('masks string and dollar-quoted literals', async () => {
    await keel.tenant('acme').query(`SELECT 'hunter2' AS a, $$also secret$$ AS b, E'x\\'y' AS c, 3.5e2 AS d`)
    const text = spans()[0]?.attributes['db.query.text']
    expect(text).toBe('SELECT ? AS a, ? AS b, ? AS c, ? AS d')
  })

  it('records error.type and the SQLSTATE on a failing query', async () => {
    await keel
      .tenant('acme')
      .query('SELECT 1/0')
      .catch(() => undefined)
    const [span] = spans()
    expect(span?.status.code).toBe(SpanStatusCode.ERROR)
    expect(span?.attributes['error.type']).toBe('22012')
    expect(span?.attributes['db.response.status_code']).toBe('22012')
  })

  it('parents the statements of a transaction under its span, under the caller span', async () => {
    const tracer = provider.getTracer('test')
    await tracer.startActiveSpan('request', async (request) => {
      await keel.tenant('acme').transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id) VALUES ('acme')`)
        await tx.query(`SELECT count(*) FROM ${table}`)
      })
      request.end()
    })
    const all = spans()
    const request = all.find((s) => s.name === 'request')!
    const tx = all.find((s) => s.name === 'TRANSACTION keel')!
    const children = all.filter((s) => s.parentSpanContext?.spanId === tx.spanContext().spanId)
    expect(tx.parentSpanContext?.spanId).toBe(request.spanContext().spanId)
    expect(children.map((s) => s.attributes['db.operation.name']).sort()).toEqual(['INSERT', 'SELECT'])
    expect(tx.attributes['keel.tenant.id']).toBe('acme')
  })

  it("traces cache calls with keel.cache.result, the loader's queries nested under them", async () => {
    const tracer = provider.getTracer('test')
    const db = keel.tenant('acme')
    const loader = () => db.query('SELECT 1 AS one').then((r) => r.rows)
    await tracer.startActiveSpan('request', async (request) => {
      await db.cached({ key: `otel-${Date.now()}-${Math.random()}`, tags: ['t'] }, loader)
      request.end()
    })
    let all = spans()
    const cacheSpan = all.find((s) => s.name === 'keel.cache get')!
    expect(cacheSpan.attributes).toMatchObject({ 'keel.cache.result': 'miss', 'keel.tenant.id': 'acme' })
    const query = all.find((s) => s.name === 'SELECT keel')!
    expect(query.parentSpanContext?.spanId).toBe(cacheSpan.spanContext().spanId)
    exporter.reset()
    await tracer.startActiveSpan('request 2', async (request) => {
      await db.cached({ key: 'otel-hit' }, loader)
      await db.cached({ key: 'otel-hit' }, loader)
      request.end()
    })
    all = spans()
    expect(
      all.filter((s) => s.name === 'keel.cache get').map((s) => s.attributes['keel.cache.result']),
    ).toEqual(['miss', 'l1_hit'])
  })

  it("honours queryText: 'off'", async () => {
    const quiet = testKeel({ telemetry: { tracerProvider: provider, queryText: 'off' } })
    try {
      await quiet.tenant('acme').query('SELECT 1')
      expect(spans()[0]?.attributes['db.query.text']).toBeUndefined()
    } finally {
      await quiet.close()
    }
  })
})
