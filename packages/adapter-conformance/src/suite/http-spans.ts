import type { RequestListener } from 'node:http'
import type { Keel } from '@keel/core'
import { context, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { testKeel } from '../support/keel.js'
import { waitFor } from '../support/wait.js'
import { asTenant, type Transport, type WithApp } from './harness.js'

/** The SERVER span an adapter starts (or joins), its name, status and children. */
export function spans(transport: Transport, withApp: WithApp): void {
  describe('HTTP spans', () => {
    const exporter = new InMemorySpanExporter()
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    const tracer = provider.getTracer('conformance')
    let traced: Keel

    beforeAll(() => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
      traced = testKeel({ telemetry: { tracerProvider: provider } })
    })
    afterAll(async () => {
      await traced.close()
      context.disable()
    })
    beforeEach(() => exporter.reset())

    // The response can reach the client a moment before the span ends: wait for it, then look.
    const finished = async (kind: SpanKind): Promise<ReadableSpan[]> => {
      await waitFor(`a finished ${SpanKind[kind]} span`, () =>
        exporter.getFinishedSpans().some((s) => s.kind === kind),
      )
      return exporter.getFinishedSpans()
    }

    it('without instrumentation: a SERVER span is the root, the db span its child', async () => {
      await withApp({ keel: traced, options: { tenant: 'header' } }, async (client) => {
        expect((await client.request({ path: '/items?secret=1', headers: asTenant('acme') })).status).toBe(
          200,
        )
      })
      const all = await finished(SpanKind.SERVER)
      const servers = all.filter((s) => s.kind === SpanKind.SERVER)
      expect(servers).toHaveLength(1)
      const server = servers[0]!
      expect(server.name).toBe('GET /items')
      expect(server.parentSpanContext).toBeUndefined()
      expect(server.attributes).toMatchObject({
        'http.request.method': 'GET',
        'http.route': '/items',
        'url.path': '/items',
        'url.scheme': 'http',
        'http.response.status_code': 200,
        'keel.tenant.id': 'acme',
      })
      const db = all.find((s) => s.kind === SpanKind.CLIENT && s.name.startsWith('SELECT'))
      expect(db?.parentSpanContext?.spanId).toBe(server.spanContext().spanId)
      expect(db?.spanContext().traceId).toBe(server.spanContext().traceId)
    })

    it('the route template, not the tenant, names the span of a { param } route', async () => {
      await withApp(
        { keel: traced, options: { tenant: { param: 'tenantId' } }, prefix: '/t/:tenantId' },
        async (client) => {
          expect((await client.request({ path: '/t/acme/items' })).status).toBe(200)
        },
      )
      const server = (await finished(SpanKind.SERVER)).find((s) => s.kind === SpanKind.SERVER)
      expect(server?.name).toBe('GET /t/:tenantId/items')
    })

    it('a 5xx KeelError marks the span as an error with the code', async () => {
      const closed = testKeel({ telemetry: { tracerProvider: provider } })
      await closed.close()
      await withApp({ keel: closed, options: { tenant: 'header' } }, async (client) => {
        expect((await client.request({ path: '/items', headers: asTenant('acme') })).status).toBe(503)
      })
      const server = (await finished(SpanKind.SERVER)).find((s) => s.kind === SpanKind.SERVER)
      expect(server?.status.code).toBe(2)
      expect(server?.attributes['error.type']).toBe('KEEL_CLOSED')
    })

    it('with a SERVER span already active (instrumentation-http): no second one; db spans are its children', async () => {
      const startOuter = () => tracer.startSpan('GET', { kind: SpanKind.SERVER }, ROOT_CONTEXT)
      // What instrumentation-http does around every request on a socket.
      const wrap =
        (listener: RequestListener): RequestListener =>
        (req, res) => {
          const outer = startOuter()
          res.once('finish', () => outer.end())
          context.with(trace.setSpan(ROOT_CONTEXT, outer), () => listener(req, res))
        }
      await withApp({ keel: traced, options: { tenant: 'header' }, wrap }, async (client) => {
        const send = () => client.request({ path: '/items', headers: asTenant('acme') })
        if (transport === 'socket') {
          expect((await send()).status).toBe(200)
        } else {
          const outer = startOuter()
          const res = await context.with(trace.setSpan(ROOT_CONTEXT, outer), send)
          outer.end()
          expect(res.status).toBe(200)
        }
      })
      const all = await finished(SpanKind.SERVER)
      const outerSpans = all.filter((s) => s.kind === SpanKind.SERVER)
      expect(outerSpans).toHaveLength(1)
      expect(outerSpans[0]!.name).toBe('GET')
      expect(outerSpans[0]!.attributes['keel.tenant.id']).toBe('acme')
      const db = all.find((s) => s.kind === SpanKind.CLIENT)
      expect(db?.parentSpanContext?.spanId).toBe(outerSpans[0]!.spanContext().spanId)
    })

    it('tracing: false starts no span', async () => {
      await withApp({ keel: traced, options: { tenant: 'header', tracing: false } }, async (client) => {
        expect((await client.request({ path: '/items', headers: asTenant('acme') })).status).toBe(200)
      })
      await finished(SpanKind.CLIENT)
      expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)).toEqual([])
    })
  })
}
