import type { Keel } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { testKeel } from '../support/keel.js'
import { waitFor } from '../support/wait.js'
import { asTenant, unique, type WithApp } from './harness.js'

/** The consistency token across requests: header and cookie carriers, and garbage tokens. */
export function readYourWrites(withApp: WithApp): void {
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
