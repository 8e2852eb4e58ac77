import type { RequestListener } from 'node:http'
import { errorCodes, type Keel } from '@keel/core'
import type { HttpRequestView, KeelHttpOptions } from '@keel/core/http'
import { context, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from '../../core/test/support/db.js'
import { testKeel } from '../../core/test/support/keel.js'
import { readStack, stackCtl } from '../../core/test/support/stack.js'
import { waitFor } from '../../core/test/support/wait.js'
import { HOLD_LOCK, ITEMS_TABLE } from './conformance-routes.js'
import { socketRequest, type TestRequest, type TestResponse } from './http-client.js'

export interface AppSetup {
  keel: Keel
  /** The adapter's shared options (Fastify's harness adds `keel` and `closeKeel: false`). */
  options: KeelHttpOptions<HttpRequestView>
  /** Where the routes of conformance-routes.ts are mounted: '' or '/t/:tenantId' ({ param } tests). */
  prefix: string
  /** Stands in for @opentelemetry/instrumentation-http: wraps the socket server's request listener. */
  wrap?: ((listener: RequestListener) => RequestListener) | undefined
}

export interface AdapterApp {
  /** In-process: Fastify's inject(), light-my-request for Express. */
  inject(request: TestRequest): Promise<TestResponse>
  /** Listens on 127.0.0.1:0; resolves with the base URL. */
  listen(): Promise<string>
  close(): Promise<void>
}

export type MakeApp = (setup: AppSetup) => Promise<AdapterApp>

type Transport = 'inject' | 'socket'

interface Client {
  request(request: TestRequest): Promise<TestResponse>
}

const asTenant = (tenant: string) => ({ 'x-tenant-id': tenant })
const unique = () => Math.random().toString(36).slice(2, 10)

interface ErrorBody {
  error: { code: string; message: string }
}

/**
 * The behaviour every keel HTTP adapter must have, against the real stack, through both an in-process
 * inject and real sockets. `makeApp` builds the adapter's app with the routes of conformance-routes.ts.
 */
export function describeAdapter(name: string, makeApp: MakeApp): void {
  describe(name, () => {
    let keel: Keel

    beforeAll(async () => {
      await createRlsTable(ITEMS_TABLE)
      await awaitOnReplicas(ITEMS_TABLE)
      keel = testKeel()
    })
    afterAll(async () => {
      await keel.close()
      await dropTable(ITEMS_TABLE)
    })

    for (const transport of ['inject', 'socket'] as const) {
      describe(`through ${transport === 'inject' ? 'inject()' : 'a real socket'}`, () => {
        const withApp = async (
          setup: Omit<AppSetup, 'keel' | 'prefix'> & { keel?: Keel; prefix?: string },
          run: (client: Client) => Promise<void>,
        ) => {
          const app = await makeApp({ keel, prefix: '', ...setup })
          try {
            await run(await clientFor(app, transport))
          } finally {
            await app.close()
          }
        }
        tenantResolution(() => keel, withApp)
        requestScope(withApp)
        overload(withApp)
        readYourWrites(withApp)
        health(withApp)
        spans(transport, withApp)
      })
    }
  })
}

type WithApp = (
  setup: Omit<AppSetup, 'keel' | 'prefix'> & { keel?: Keel; prefix?: string },
  run: (client: Client) => Promise<void>,
) => Promise<void>

async function clientFor(app: AdapterApp, transport: Transport): Promise<Client> {
  if (transport === 'inject') return { request: (r) => app.inject(r) }
  const base = await app.listen()
  return { request: (r) => socketRequest(base, r) }
}

function expectError(res: TestResponse, status: number, code: string): void {
  expect({ status: res.status, code: (res.body as ErrorBody).error?.code }).toEqual({ status, code })
  expect(typeof (res.body as ErrorBody).error.message).toBe('string')
}

function tenantResolution(keel: () => Keel, withApp: WithApp): void {
  describe('tenant resolution', () => {
    it("'header' reads x-tenant-id", async () => {
      await withApp({ options: { tenant: 'header' } }, async (client) => {
        const res = await client.request({ path: '/items', headers: asTenant('acme') })
        expect(res.status).toBe(200)
        expect(res.body).toMatchObject({ tenant: 'acme' })
      })
    })

    it('{ header } reads another header', async () => {
      await withApp({ options: { tenant: { header: 'X-Org' } } }, async (client) => {
        const res = await client.request({ path: '/items', headers: { 'x-org': 'globex' } })
        expect(res.body).toMatchObject({ tenant: 'globex' })
        expectError(
          await client.request({ path: '/items', headers: asTenant('acme') }),
          400,
          'KEEL_INVALID_TENANT',
        )
      })
    })

    it("'subdomain' takes the first label of a three-label host, never of an IP or a bare domain", async () => {
      await withApp({ options: { tenant: 'subdomain' } }, async (client) => {
        const res = await client.request({ path: '/items', headers: { host: 'acme.example.test:8080' } })
        expect(res.body).toMatchObject({ tenant: 'acme' })
        expectError(
          await client.request({ path: '/items', headers: { host: 'example.test' } }),
          400,
          'KEEL_INVALID_TENANT',
        )
        expectError(
          await client.request({ path: '/items', headers: { host: '127.0.0.1' } }),
          400,
          'KEEL_INVALID_TENANT',
        )
      })
    })

    it('{ subdomain: { baseDomain } } takes exactly one label in front of the base domain', async () => {
      await withApp(
        { options: { tenant: { subdomain: { baseDomain: 'saas.localhost' } } } },
        async (client) => {
          const ok = await client.request({ path: '/items', headers: { host: 'initech.saas.localhost' } })
          expect(ok.body).toMatchObject({ tenant: 'initech' })
          for (const host of ['saas.localhost', 'a.b.saas.localhost', 'acme.other.localhost']) {
            expectError(
              await client.request({ path: '/items', headers: { host } }),
              400,
              'KEEL_INVALID_TENANT',
            )
          }
        },
      )
    })

    it('{ param } reads a route parameter', async () => {
      await withApp(
        { options: { tenant: { param: 'tenantId' } }, prefix: '/t/:tenantId' },
        async (client) => {
          const res = await client.request({ path: '/t/umbrella/items' })
          expect(res.status).toBe(200)
          expect(res.body).toMatchObject({ tenant: 'umbrella' })
        },
      )
    })

    it('a function (sync or async) of the request', async () => {
      const fromBearer = (req: HttpRequestView) => req.headers.authorization?.replace(/^Bearer /, '')
      await withApp({ options: { tenant: fromBearer } }, async (client) => {
        const res = await client.request({ path: '/items', headers: { authorization: 'Bearer hooli' } })
        expect(res.body).toMatchObject({ tenant: 'hooli' })
      })
      await withApp({ options: { tenant: async (req) => fromBearer(req) } }, async (client) => {
        const res = await client.request({ path: '/items', headers: { authorization: 'Bearer piedpiper' } })
        expect(res.body).toMatchObject({ tenant: 'piedpiper' })
        expectError(await client.request({ path: '/items' }), 400, 'KEEL_INVALID_TENANT')
      })
    })

    it('missing -> 400, invalid -> 400, unknown to tenantExists -> 404, each with its code', async () => {
      const seen: string[] = []
      const tenantExists = async (id: string, req: HttpRequestView) => {
        seen.push(`${id}:${typeof req.headers}`)
        return id !== 'ghost'
      }
      await withApp({ options: { tenant: 'header', tenantExists } }, async (client) => {
        const missing = await client.request({ path: '/items' })
        expectError(missing, 400, 'KEEL_INVALID_TENANT')
        expect((missing.body as ErrorBody).error.message).toContain('x-tenant-id')
        expectError(
          await client.request({ path: '/items', headers: asTenant('a;b') }),
          400,
          'KEEL_INVALID_TENANT',
        )
        expectError(
          await client.request({ path: '/items', headers: asTenant('ghost') }),
          404,
          'KEEL_TENANT_UNKNOWN',
        )
        expect((await client.request({ path: '/items', headers: asTenant('acme') })).status).toBe(200)
        // Malformed ids never reach the app's check.
        expect(seen).toEqual(['ghost:object', 'acme:object'])
      })
    })

    it('tenants are isolated over HTTP: each sees only its own rows', async () => {
      const [a, b] = [`iso_a_${unique()}`, `iso_b_${unique()}`]
      await withApp({ options: { tenant: 'header' } }, async (client) => {
        for (const [tenant, body] of [
          [a, 'a-1'],
          [b, 'b-1'],
          [a, 'a-2'],
        ] as const) {
          const res = await client.request({
            method: 'POST',
            path: '/items',
            headers: asTenant(tenant),
            body: { body },
          })
          expect(res.status).toBe(201)
        }
        const [ra, rb] = await Promise.all([
          client.request({ path: '/items', headers: asTenant(a) }),
          client.request({ path: '/items', headers: asTenant(b) }),
        ])
        expect(ra.body).toEqual({ tenant: a, bodies: ['a-1', 'a-2'] })
        expect(rb.body).toEqual({ tenant: b, bodies: ['b-1'] })
      })
      // keel() is the suite's instance: a direct look at the table confirms the rows were scoped.
      expect((await keel().tenant(b).query(`SELECT count(*)::int AS n FROM ${ITEMS_TABLE}`)).rows[0]).toEqual(
        { n: 1 },
      )
    })
  })
}

function requestScope(withApp: WithApp): void {
  describe('request scope', () => {
    it('keel.current() works in the handler and in an async function awaited after a db call', async () => {
      await withApp({ options: { tenant: 'header' } }, async (client) => {
        const results = await Promise.all(
          ['ctx_a', 'ctx_b', 'ctx_c'].map((t) => client.request({ path: '/deep', headers: asTenant(t) })),
        )
        expect(results.map((r) => r.body)).toEqual(
          ['ctx_a', 'ctx_b', 'ctx_c'].map((t) => ({ tenant: t, handler: t, deep: `${t}/${t}` })),
        )
      })
    })

    it('a raw Postgres error or a plain Error: a JSON 500 without the message, stack or paths', async () => {
      await withApp({ options: { tenant: 'header' } }, async (client) => {
        for (const path of ['/pg-error', '/boom']) {
          const res = await client.request({ path, headers: asTenant('acme') })
          expect(res.status).toBe(500)
          expect(res.headers['content-type']).toMatch(/^application\/json/)
          expect(res.body).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'Internal Server Error' } })
          expect(JSON.stringify(res.body)).not.toMatch(
            /no_such_table|secret_column|boom|postgres:|\/work\/|node_modules|\.[jt]s\b|\bat /,
          )
        }
      })
    })

    it('a body the parser refuses keeps its 4xx, as JSON without internals', async () => {
      await withApp({ options: { tenant: 'header' } }, async (client) => {
        const res = await client.request({
          method: 'POST',
          path: '/items',
          headers: { ...asTenant('acme'), 'content-type': 'application/json' },
          raw: '{"body": ',
        })
        expect(res.status).toBe(400)
        expect(res.headers['content-type']).toMatch(/^application\/json/)
        expect((res.body as ErrorBody).error.code).toBe('REQUEST_INVALID')
        expect(JSON.stringify(res.body)).not.toMatch(/\/work\/|node_modules|\bat /)
      })
    })

    it('a 5xx KeelError says only what its code means (KEEL_CLOSED -> 503)', async () => {
      const closed = testKeel()
      await closed.close()
      await withApp({ keel: closed, options: { tenant: 'header' } }, async (client) => {
        const res = await client.request({ path: '/items', headers: asTenant('acme') })
        expectError(res, 503, 'KEEL_CLOSED')
        expect((res.body as ErrorBody).error.message).toBe(errorCodes.KEEL_CLOSED)
      })
    })
  })
}

function overload(withApp: WithApp): void {
  it('KEEL_TENANT_BUSY -> 503 with Retry-After, for real: one request holds the only connection', async () => {
    const busy = testKeel({ limits: { tenantConnections: 1, acquireTimeoutMs: 100 } })
    const locker = await connect('super')
    try {
      await locker.query('SELECT pg_advisory_lock($1)', [HOLD_LOCK])
      await withApp({ keel: busy, options: { tenant: 'header' } }, async (client) => {
        const holding = client.request({ path: '/hold', headers: asTenant('busy') })
        await waitFor('the first request to hold its connection', async () => {
          const r = await locker.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'",
          )
          return r.rows[0].n === 1
        })
        const refused = await client.request({ path: '/items', headers: asTenant('busy') })
        expectError(refused, 503, 'KEEL_TENANT_BUSY')
        expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1)
        expect(Number.isInteger(Number(refused.headers['retry-after']))).toBe(true)
        // Other tenants are not affected.
        expect((await client.request({ path: '/items', headers: asTenant('calm') })).status).toBe(200)
        await locker.query('SELECT pg_advisory_unlock($1)', [HOLD_LOCK])
        expect((await holding).status).toBe(200)
      })
    } finally {
      await locker.end()
      await busy.close()
    }
  })
}

function readYourWrites(withApp: WithApp): void {
  describe('read-your-writes across requests (only the replica delayed 1.5 s)', () => {
    let lagged: Keel
    beforeAll(async () => {
      lagged = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000 })
      await waitFor('replica2 in rotation', async () =>
        (await lagged.health()).replicas.every((r) => r.inRotation),
      )
    })
    afterAll(() => lagged.close())

    it('the keel-consistency header carries the write to the next request; without it the read is stale', async () => {
      const tenant = `ryw_${unique()}`
      await withApp({ keel: lagged, options: { tenant: 'header' } }, async (client) => {
        const plain = await client.request({ path: '/items', headers: asTenant(tenant) })
        expect(plain.headers['keel-consistency']).toBeUndefined()
        const write = await client.request({
          method: 'POST',
          path: '/items',
          headers: asTenant(tenant),
          body: { body: 'fresh' },
        })
        expect(write.status).toBe(201)
        const token = write.headers['keel-consistency']
        expect(typeof token).toBe('string')
        const stale = await client.request({ path: '/items', headers: asTenant(tenant) })
        expect(stale.body).toEqual({ tenant, bodies: [] })
        const fresh = await client.request({
          path: '/items',
          headers: { ...asTenant(tenant), 'keel-consistency': token as string },
        })
        expect(fresh.body).toEqual({ tenant, bodies: ['fresh'] })
        // The position travels on: the response echoes it for the request after.
        expect(fresh.headers['keel-consistency']).toBe(token)
      })
    })

    it('the cookie variant: Set-Cookie out, Cookie in', async () => {
      const tenant = `rywc_${unique()}`
      const consistency = { cookie: { name: 'kc', maxAge: 60 } }
      await withApp({ keel: lagged, options: { tenant: 'header', consistency } }, async (client) => {
        const write = await client.request({
          method: 'POST',
          path: '/items',
          headers: asTenant(tenant),
          body: { body: 'baked' },
        })
        const setCookie = ([] as string[]).concat(write.headers['set-cookie'] ?? [])
        const cookie = setCookie.find((c) => c.startsWith('kc='))
        expect(cookie).toMatch(/^kc=[^;]+; Path=\/; Max-Age=60; SameSite=Lax; HttpOnly$/)
        const stale = await client.request({ path: '/items', headers: asTenant(tenant) })
        expect(stale.body).toEqual({ tenant, bodies: [] })
        const fresh = await client.request({
          path: '/items',
          headers: { ...asTenant(tenant), cookie: `theme=dark; ${cookie!.split(';')[0]}` },
        })
        expect(fresh.body).toEqual({ tenant, bodies: ['baked'] })
      })
    })

    it('a garbage token is not an error: the request reads the primary and no token goes back', async () => {
      await withApp({ keel: lagged, options: { tenant: 'header' } }, async (client) => {
        const res = await client.request({
          path: '/items',
          headers: { ...asTenant('garbage'), 'keel-consistency': 'k1.not-a-token' },
        })
        expect(res.status).toBe(200)
        expect(res.headers['keel-consistency']).toBeUndefined()
      })
    })
  })
}

/**
 * A keel whose cache breaker opens on the first Redis failure and probes every 50 ms; the breaker learns
 * about Redis from cache calls, so tests keep touching the cache while they wait.
 */
function keelWithQuickBreaker(replicas: Array<'replica1' | 'replica2'>) {
  const cached = testKeel({
    ...(replicas.length > 0 ? { replicas } : {}),
    cache: {
      redis: { url: readStack().redis.url, commandTimeoutMs: 200 },
      breakerThreshold: 1,
      breakerResetMs: 50,
    },
  })
  let n = 0
  const touchCache = () => cached.cache.cached({ key: `probe-${n++}`, ttlMs: 60_000 }, async () => n)
  return { cached, touchCache }
}

function health(withApp: WithApp): void {
  describe('health routes', () => {
    it('/healthz answers 200 without a tenant or the database', async () => {
      const closed = testKeel()
      await closed.close()
      await withApp({ keel: closed, options: { tenant: 'header', health: true } }, async (client) => {
        const res = await client.request({ path: '/healthz' })
        expect({ status: res.status, body: res.body }).toEqual({ status: 200, body: { status: 'ok' } })
      })
    })

    it('/readyz: 200, 503 while Redis is stopped, 200 again after; no secrets in the body', async () => {
      const { cached, touchCache } = keelWithQuickBreaker(['replica1'])
      try {
        await withApp({ keel: cached, options: { tenant: 'header', health: true } }, async (client) => {
          const ready = await client.request({ path: '/readyz' })
          expect(ready.status).toBe(200)
          expect(ready.body).toMatchObject({ status: 'ready', primary: 'up', cache: { redis: 'up' } })
          expect((ready.body as { replicas: unknown[] }).replicas).toEqual([
            expect.objectContaining({ name: 'replica1', status: expect.any(String) }),
          ])
          expect(JSON.stringify(ready.body)).not.toMatch(/127\.0\.0\.1|app@|postgres:/)
          await stackCtl('stop', 'redis')
          try {
            let last: TestResponse | undefined
            await waitFor('readiness to fail with Redis down', async () => {
              await touchCache()
              last = await client.request({ path: '/readyz' })
              return last.status === 503
            })
            expect(last?.body).toMatchObject({ status: 'not ready', primary: 'up', cache: { redis: 'down' } })
          } finally {
            await stackCtl('start', 'redis')
          }
          await waitFor('readiness to recover with Redis back', async () => {
            await touchCache()
            return (await client.request({ path: '/readyz' })).status === 200
          })
        })
      } finally {
        await cached.close()
      }
    })

    it('/readyz with readinessRequiresRedis: false stays 200 while Redis is stopped, and says so', async () => {
      const { cached, touchCache } = keelWithQuickBreaker([])
      try {
        await withApp(
          { keel: cached, options: { tenant: 'header', health: { readinessRequiresRedis: false } } },
          async (client) => {
            await stackCtl('stop', 'redis')
            try {
              await waitFor('the cache to see Redis down', async () => {
                await touchCache()
                return (await cached.health()).cache.redis === 'down'
              })
              const res = await client.request({ path: '/readyz' })
              expect(res.status).toBe(200)
              expect(res.body).toMatchObject({ status: 'ready', primary: 'up', cache: { redis: 'down' } })
            } finally {
              await stackCtl('start', 'redis')
            }
          },
        )
      } finally {
        await cached.close()
      }
    })

    it('/readyz answers 503 once keel is closed', async () => {
      const closing = testKeel()
      await withApp(
        { keel: closing, options: { tenant: 'header', health: { readiness: '/ready' } } },
        async (client) => {
          expect((await client.request({ path: '/ready' })).status).toBe(200)
          await closing.close()
          const res = await client.request({ path: '/ready' })
          expect(res.status).toBe(503)
          expect(res.body).toMatchObject({ status: 'not ready', primary: 'down' })
        },
      )
    })
  })
}

function spans(transport: Transport, withApp: WithApp): void {
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
