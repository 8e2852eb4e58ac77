import { describe, expect, it } from 'vitest'
import type { TestResponse } from '../http-client.js'
import { testKeel } from '../support/keel.js'
import { readStack, stackCtl } from '../support/stack.js'
import { waitFor } from '../support/wait.js'
import type { WithApp } from './harness.js'

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

export function health(withApp: WithApp): void {
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
