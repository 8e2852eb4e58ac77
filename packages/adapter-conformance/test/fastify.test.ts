import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { keelFastify } from '@keel/fastify'
import Fastify from 'fastify'
import { describe, expect, it } from 'vitest'
import { conformanceRoutes as routes } from '../src/conformance-routes.js'
import { type AppSetup, describeAdapter } from '../src/conformance-suite.js'
import { encodeRequest, fromInjected, type TestRequest } from '../src/http-client.js'
import { testKeel } from '../src/support/keel.js'

async function buildApp({ keel, options, prefix, wrap }: AppSetup, closeKeel = false) {
  const app = Fastify(wrap === undefined ? {} : { serverFactory: (handler) => createServer(wrap(handler)) })
  await app.register(keelFastify, { keel, closeKeel, ...options })
  await app.register(
    async (scope) => {
      scope.get('/items', (request) => routes.listItems(request.db))
      scope.post('/items', async (request, reply) =>
        reply.code(201).send(await routes.addItem(request.db, request.body)),
      )
      scope.get('/deep', (request) => routes.deep(scope.keel, request.db))
      scope.get('/hold', (request) => routes.hold(request.db))
      scope.get('/boom', async () => routes.boom())
      scope.get('/pg-error', async (request) => routes.pgError(request.db))
    },
    { prefix },
  )
  await app.ready()
  return app
}

async function makeApp(setup: AppSetup) {
  const app = await buildApp(setup)
  return {
    async inject(request: TestRequest) {
      const { headers, payload } = encodeRequest(request)
      return fromInjected(
        await app.inject({ method: (request.method ?? 'GET') as 'GET', url: request.path, headers, payload }),
      )
    },
    async listen() {
      await app.listen({ host: '127.0.0.1', port: 0 })
      return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    },
    close: () => app.close(),
  }
}

describeAdapter('@keel/fastify', makeApp)

describe('@keel/fastify specifics', () => {
  it('decorates fastify.keel and closes keel on app.close() (closeKeel defaults to true)', async () => {
    const keel = testKeel()
    const app = Fastify()
    await app.register(keelFastify, { keel, tenant: 'header' })
    await app.ready()
    expect(app.keel).toBe(keel)
    await app.close()
    expect(() => keel.tenant('acme')).toThrow(expect.objectContaining({ code: 'KEEL_CLOSED' }))
  })

  it('a route with config { keel: false } needs no tenant, and has no request.db', async () => {
    const app = Fastify()
    await app.register(keelFastify, { keel: testKeel(), tenant: 'header' })
    app.get('/public', { config: { keel: false } }, () => ({ ok: true }))
    app.get('/public-db', { config: { keel: false } }, (request) => ({ db: request.db }))
    expect((await app.inject({ url: '/public' })).json()).toEqual({ ok: true })
    const res = await app.inject({ url: '/public-db' })
    expect(res.json()).toMatchObject({ error: { code: 'KEEL_NO_TENANT_CONTEXT' } })
    await app.close()
  })
})
