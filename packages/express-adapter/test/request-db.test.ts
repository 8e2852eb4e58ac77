import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { createKeel, isKeelError, type Keel } from '@keel/core'
import express from 'express'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { keelErrorHandler, keelExpress } from '../src/index.js'

// req.db is typed TenantClient on every Request (express-request.d.ts): on a route keelExpress() does not
// cover, reading it throws KEEL_NO_TENANT_CONTEXT instead of handing out undefined (ADR 0028).
const stack = JSON.parse(readFileSync(new URL('../../../.keel/stack.json', import.meta.url), 'utf8')) as {
  primary: { url: string }
}

describe('req.db', () => {
  let keel: Keel
  let base: string
  let close: () => void
  beforeAll(async () => {
    keel = createKeel({
      postgres: { primary: { connectionString: stack.primary.url } },
      tenancy: { mode: 'rls', setting: 'app.tenant_id' },
    })
    const app = express()
    app.get('/outside', (req, res) => {
      try {
        res.json({ tenant: req.db.tenantId })
      } catch (error) {
        res.json({ code: isKeelError(error) ? error.code : 'other', message: (error as Error).message })
      }
    })
    app.get('/outside-thrown', (req, res) => {
      res.json({ tenant: req.db.tenantId })
    })
    app.use('/t/:tenantId', keelExpress(keel, { tenant: { param: 'tenantId' } }))
    app.get('/t/:tenantId/me', async (req, res) => {
      const { rows } = await req.db.query<{ tenant: string }>(
        "SELECT current_setting('app.tenant_id', true) AS tenant",
      )
      res.json({ tenant: req.db.tenantId, scoped: rows[0]!.tenant, own: Object.hasOwn(req, 'db') })
    })
    app.use(keelErrorHandler())
    const server = await new Promise<import('node:http').Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s))
    })
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    close = () => server.close()
  })
  afterAll(async () => {
    close()
    await keel.close()
  })

  it("is the request's tenant client on a route keelExpress() covers", async () => {
    const res = await fetch(`${base}/t/acme/me`)
    expect(await res.json()).toEqual({ tenant: 'acme', scoped: 'acme', own: true })
  })

  it('throws KEEL_NO_TENANT_CONTEXT on a route it does not cover, naming the route', async () => {
    const res = await fetch(`${base}/outside`)
    const body = (await res.json()) as { code: string; message: string }
    expect(body.code).toBe('KEEL_NO_TENANT_CONTEXT')
    expect(body.message).toContain('GET /outside')
  })

  it('an unhandled read answers 500 through keelErrorHandler, not a TypeError on undefined', async () => {
    const res = await fetch(`${base}/outside-thrown`)
    expect(res.status).toBe(500)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('KEEL_NO_TENANT_CONTEXT')
  })
})
