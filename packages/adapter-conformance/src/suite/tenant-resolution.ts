import type { Keel } from '@keel/core'
import type { HttpRequestView } from '@keel/core/http'
import { describe, expect, it } from 'vitest'
import { ITEMS_TABLE } from '../conformance-routes.js'
import { asTenant, type ErrorBody, expectError, unique, type WithApp } from './harness.js'

/** Every tenant source an adapter accepts, its refusals (400/404 with codes), and isolation over HTTP. */
export function tenantResolution(keel: () => Keel, withApp: WithApp): void {
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
          'KEEL_TENANT_INVALID',
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
          'KEEL_TENANT_INVALID',
        )
        expectError(
          await client.request({ path: '/items', headers: { host: '127.0.0.1' } }),
          400,
          'KEEL_TENANT_INVALID',
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
              'KEEL_TENANT_INVALID',
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
        expectError(await client.request({ path: '/items' }), 400, 'KEEL_TENANT_INVALID')
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
        expectError(missing, 400, 'KEEL_TENANT_INVALID')
        expect((missing.body as ErrorBody).error.message).toContain('x-tenant-id')
        expectError(
          await client.request({ path: '/items', headers: asTenant('a;b') }),
          400,
          'KEEL_TENANT_INVALID',
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
