import { readFileSync } from 'node:fs'
import { createKeel, type Keel } from '@keel/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { keelFastify } from '../src/index.js'

// request.db is typed TenantClient: on a route the plugin does not cover (`keel: false`, health, 404)
// reading it throws KEEL_NO_TENANT_CONTEXT instead of handing out null (ADR 0028).
const stack = JSON.parse(readFileSync(new URL('../../../.keel/stack.json', import.meta.url), 'utf8')) as {
  primary: { url: string }
}

describe('request.db', () => {
  let keel: Keel
  let app: FastifyInstance
  beforeAll(async () => {
    keel = createKeel({
      postgres: { primary: { connectionString: stack.primary.url } },
      tenancy: { mode: 'rls', setting: 'app.tenant_id' },
    })
    app = Fastify()
    await app.register(keelFastify, { keel, tenant: 'header' })
    app.get('/me', async (request) => {
      const { rows } = await request.db.query<{ tenant: string }>(
        "SELECT current_setting('app.tenant_id', true) AS tenant",
      )
      return { tenant: request.db.tenantId, scoped: rows[0]!.tenant }
    })
    app.get('/public', { config: { keel: false } }, async (request) => ({ tenant: request.db.tenantId }))
    app.setNotFoundHandler(async (request) => ({ tenant: request.db.tenantId }))
  })
  afterAll(() => app.close())

  it("is the request's tenant client on a route the plugin covers", async () => {
    const res = await app.inject({ url: '/me', headers: { 'x-tenant-id': 'acme' } })
    expect(res.json()).toEqual({ tenant: 'acme', scoped: 'acme' })
  })

  it('throws KEEL_NO_TENANT_CONTEXT on a route with config { keel: false }, naming the route', async () => {
    const res = await app.inject({ url: '/public' })
    expect(res.statusCode).toBe(500)
    const body = res.json() as { error: { code: string; message?: string } }
    expect(body.error.code).toBe('KEEL_NO_TENANT_CONTEXT')
  })

  it('throws it in the 404 handler too', async () => {
    const res = await app.inject({ url: '/nowhere', headers: { 'x-tenant-id': 'acme' } })
    expect((res.json() as { error: { code: string } }).error.code).toBe('KEEL_NO_TENANT_CONTEXT')
  })
})
