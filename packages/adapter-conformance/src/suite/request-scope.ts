import { errorCodes } from '@keel/core'
import { describe, expect, it } from 'vitest'
import { HOLD_LOCK } from '../conformance-routes.js'
import { connect } from '../support/db.js'
import { testKeel } from '../support/keel.js'
import { waitFor } from '../support/wait.js'
import { asTenant, type ErrorBody, expectError, type WithApp } from './harness.js'

/** keel.current() through the request, safe error bodies, and KEEL_TENANT_BUSY as a real 503. */
export function requestScope(withApp: WithApp): void {
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

export function overload(withApp: WithApp): void {
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
