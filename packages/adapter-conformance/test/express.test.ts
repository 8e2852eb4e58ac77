import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { closeKeelWithServer, keelErrorHandler, keelExpress } from '@keel/express'
import express from 'express'
import { inject } from 'light-my-request'
import { describe, expect, it } from 'vitest'
import { conformanceRoutes as routes } from '../src/conformance-routes.js'
import { type AppSetup, describeAdapter } from '../src/conformance-suite.js'
import { encodeRequest, fromInjected, socketRequest, type TestRequest } from '../src/http-client.js'
import { testKeel } from '../src/support/keel.js'

function buildApp({ keel, options, prefix }: AppSetup): express.Express {
  const app = express()
  app.use(express.json())
  const router = express.Router()
  router.get('/items', async (req, res) => {
    res.json(await routes.listItems(req.db))
  })
  router.post('/items', async (req, res) => {
    res.status(201).json(await routes.addItem(req.db, req.body))
  })
  router.get('/deep', async (req, res) => {
    res.json(await routes.deep(req.keel, req.db))
  })
  router.get('/hold', async (req, res) => {
    res.json(await routes.hold(req.db))
  })
  router.get('/boom', () => routes.boom())
  router.get('/pg-error', async (req, res) => {
    res.json(await routes.pgError(req.db))
  })
  app.use(prefix === '' ? '/' : prefix, keelExpress(keel, options), router)
  app.use(keelErrorHandler())
  return app
}

/**
 * light-my-request, handed an Express app, re-parents Express's shared request and response
 * prototypes onto its own fakes, for the whole process: a real socket request afterwards would hang.
 * The harness puts the prototypes back when the app closes.
 */
function restorePrototypesOnClose(app: express.Express): () => void {
  const saved = [app.request, app.response].map((o) => {
    const shared = Object.getPrototypeOf(o) as object
    return [shared, Object.getPrototypeOf(shared) as object] as const
  })
  return () => {
    for (const [shared, parent] of saved) Object.setPrototypeOf(shared, parent)
  }
}

async function makeApp(setup: AppSetup) {
  const app = buildApp(setup)
  const restorePrototypes = restorePrototypesOnClose(app)
  let server: Server | undefined
  return {
    async inject(request: TestRequest) {
      const { headers, payload } = encodeRequest(request)
      return fromInjected(
        await inject(app, {
          method: (request.method ?? 'GET') as 'GET',
          url: request.path,
          headers,
          payload,
        }),
      )
    },
    async listen() {
      server = createServer(setup.wrap === undefined ? app : setup.wrap(app))
      await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    },
    async close() {
      restorePrototypes()
      if (server !== undefined) await new Promise((resolve) => server!.close(resolve))
    },
  }
}

describeAdapter('@keel/express', makeApp)

describe('@keel/express specifics', () => {
  it('closeKeelWithServer closes keel once the server has closed', async () => {
    const keel = testKeel()
    const server = createServer(buildApp({ keel, options: { tenant: 'header' }, prefix: '' }))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const closed = closeKeelWithServer(server, keel)
    expect(keel.tenant('acme').tenantId).toBe('acme')
    server.close()
    await closed
    expect(() => keel.tenant('acme')).toThrow(expect.objectContaining({ code: 'KEEL_CLOSED' }))
  })

  it('keel.current() survives a body parser mounted after the middleware (a body read in chunks)', async () => {
    const keel = testKeel()
    const app = express()
    app.use(keelExpress(keel, { tenant: 'header' }))
    app.use(express.json())
    app.post('/echo', async (req, res) => {
      await req.db.query('SELECT 1')
      res.json({ tenant: keel.current().tenantId, size: (req.body as { big: string }).big.length })
    })
    const server = createServer(app)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      const body = { big: 'x'.repeat(90_000) }
      const res = await socketRequest(base, {
        method: 'POST',
        path: '/echo',
        headers: { 'x-tenant-id': 'acme' },
        body,
      })
      expect(res.body).toEqual({ tenant: 'acme', size: 90_000 })
    } finally {
      await new Promise((resolve) => server.close(resolve))
      await keel.close()
    }
  })

  it('refuses bad options with KEEL_CONFIG_INVALID naming the fields', () => {
    const keel = testKeel()
    expect(() =>
      keelExpress(keel, {
        tenant: 'cookie' as 'header',
        consistency: { cookie: { maxAge: -1 } },
        tracing: 'on' as 'auto',
      }),
    ).toThrow(
      expect.objectContaining({
        code: 'KEEL_CONFIG_INVALID',
        details: { fields: ['tenant', 'consistency.cookie.maxAge', 'tracing'] },
      }),
    )
    return keel.close()
  })
})
