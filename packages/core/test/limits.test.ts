import { getEventListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { connect } from './support/db.js'
import { testKeel } from './support/keel.js'
import { waitFor } from './support/wait.js'

let keel: Keel
beforeAll(() => {
  keel = testKeel({
    pool: { max: 4 },
    limits: {
      tenantConnections: 0.5,
      acquireTimeoutMs: 300,
      statementTimeoutMs: 2_000,
      forTenant: (id: string) =>
        id === 'enterprise' ? { tenantConnections: 3, statementTimeoutMs: 0 } : undefined,
    },
  })
})
afterAll(() => keel.close())

describe('per-tenant limits', () => {
  it('caps a tenant at its share of the pool, then fails with KEEL_TENANT_BUSY after the bounded wait', async () => {
    const noisy = keel.tenant('noisy')
    const results = await Promise.allSettled(
      Array.from({ length: 4 }, () => noisy.query('SELECT pg_sleep(0.8)')),
    )
    const busy = results.filter((r) => r.status === 'rejected')
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2)
    expect(busy).toHaveLength(2)
    for (const r of busy) {
      expect((r as PromiseRejectedResult).reason).toMatchObject({
        code: 'KEEL_TENANT_BUSY',
        details: { tenantId: 'noisy', limit: 2 },
      })
    }
  })

  it("one tenant's flood leaves the others their connections", async () => {
    const flood = Promise.allSettled(
      Array.from({ length: 10 }, () => keel.tenant('noisy').query('SELECT pg_sleep(0.5)')),
    )
    await new Promise((r) => setTimeout(r, 50))
    const quiet = await keel.tenant('quiet').query<{ one: number }>('SELECT 1 AS one')
    expect(quiet.rows[0]?.one).toBe(1)
    const health = await keel.health()
    expect(health.tenants.primary?.noisy?.active).toBe(2)
    await flood
  })

  it('waits in line rather than failing when a connection frees up within acquireTimeoutMs', async () => {
    const db = keel.tenant('patient')
    const results = await Promise.all(Array.from({ length: 6 }, () => db.query('SELECT pg_sleep(0.05)')))
    expect(results).toHaveLength(6)
  })

  it('applies the per-tenant statement_timeout, and per-tenant overrides', async () => {
    await expect(keel.tenant('slow').query('SELECT pg_sleep(3)')).rejects.toMatchObject({ code: '57014' })
    const t = await keel
      .tenant('enterprise')
      .query<{ s: string }>("SELECT current_setting('statement_timeout') AS s")
    expect(t.rows[0]?.s).toBe('0')
    const d = await keel
      .tenant('slow')
      .query<{ s: string }>("SELECT current_setting('statement_timeout') AS s")
    expect(d.rows[0]?.s).toBe('2s')
    const o = await keel
      .tenant('slow')
      .query<{ s: string }>("SELECT current_setting('statement_timeout') AS s", [], {
        statementTimeoutMs: 250,
      })
    expect(o.rows[0]?.s).toBe('250ms')
    // The enterprise tenant may hold three connections.
    const held = await Promise.allSettled(
      Array.from({ length: 3 }, () => keel.tenant('enterprise').query('SELECT pg_sleep(0.4)')),
    )
    expect(held.every((r) => r.status === 'fulfilled')).toBe(true)
  })

  it('leaves no listener on a shared AbortSignal, however many calls waited on it', async () => {
    const controller = new AbortController()
    const db = keel.tenant('shared-signal')
    await Promise.all(
      Array.from({ length: 40 }, () => db.query('SELECT pg_sleep(0.005)', [], { signal: controller.signal })),
    )
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
  })

  it('puts one listener on a signal shared by many waiting calls (no MaxListenersExceededWarning), none after', async () => {
    const controller = new AbortController()
    const tenant = 'shared-signal-peak'
    const db = keel.tenant(tenant)
    // The tenant's share is 2 connections: the other calls wait in its queue, each watching the signal.
    const calls = Array.from({ length: 40 }, () =>
      db.query('SELECT pg_sleep(5)', [], { signal: controller.signal, statementTimeoutMs: 0 }),
    )
    const settled = Promise.allSettled(calls)
    await waitFor('calls queued for the tenant', async () => {
      const waiting = (await keel.health()).tenants.primary?.[tenant]?.waiting ?? 0
      return waiting >= 30
    })
    // A listener per waiting call was 38 or more here, and Node warned past 10.
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    controller.abort(new Error('request gone'))
    const outcomes = await settled
    // Every call heard the abort: the queued ones and the two running statements (cancelled).
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({ status: 'rejected', reason: { code: 'KEEL_ABORTED' } })
    }
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
  })

  it('an AbortSignal cancels the running statement and gives the connection up', async () => {
    const controller = new AbortController()
    const pending = keel.tenant('acme').query('SELECT pg_sleep(10)', [], { signal: controller.signal })
    setTimeout(() => controller.abort(new Error('user went away')), 100)
    await expect(pending).rejects.toMatchObject({ code: 'KEEL_ABORTED', cause: new Error('user went away') })
    // Cancelled server-side, not merely abandoned: no backend still sleeps.
    const su = await connect('super')
    try {
      for (let i = 0; i < 50; i++) {
        const active = await su.query(
          "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'",
        )
        if (active.rowCount === 0) break
        await new Promise((r) => setTimeout(r, 20))
      }
      const still = await su.query(
        "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'",
      )
      expect(still.rowCount).toBe(0)
    } finally {
      await su.end()
    }
    // An aborted wait for a tenant slot is KEEL_ABORTED too, and frees nothing it did not hold.
    const already = AbortSignal.abort()
    await expect(keel.tenant('acme').query('SELECT 1', [], { signal: already })).rejects.toMatchObject({
      code: 'KEEL_ABORTED',
    })
    expect((await keel.tenant('acme').query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1)
  })
})
