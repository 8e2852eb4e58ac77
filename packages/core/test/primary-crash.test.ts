import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { stackCtl } from './support/stack.js'

const table = 'crash_items'
let keel: Keel

beforeAll(async () => {
  await createRlsTable(table)
  keel = testKeel({ pool: { max: 4 }, limits: { acquireTimeoutMs: 10_000 } })
})
afterAll(async () => {
  await stackCtl('start', 'primary')
  await keel.close()
  await dropTable(table)
})

describe('the primary crashes under load', () => {
  it('fails the calls in flight, never crashes the process, and serves again once it is back', async () => {
    // Warm the pool so idle connections exist when the server dies under them.
    await Promise.all(
      Array.from({ length: 4 }, (_, i) => keel.tenant(`t${i}`).query('SELECT pg_sleep(0.01)')),
    )

    let stop = false
    const outcomes = { ok: 0, failed: 0 }
    const load = Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const db = keel.tenant(`t${i % 4}`)
        while (!stop) {
          try {
            await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, [
              db.tenantId,
              `${db.tenantId}:x`,
            ])
            outcomes.ok++
          } catch {
            outcomes.failed++
            await new Promise((r) => setTimeout(r, 20))
          }
        }
      }),
    )
    await new Promise((r) => setTimeout(r, 200))
    await stackCtl('kill', 'primary')
    await new Promise((r) => setTimeout(r, 300))
    const okBeforeRestart = outcomes.ok
    await stackCtl('start', 'primary')
    // Back in service: every tenant's statements succeed again, correctly scoped.
    for (let attempt = 0; ; attempt++) {
      try {
        await keel.tenant('t0').query('SELECT 1')
        break
      } catch (error) {
        if (attempt > 100) throw error
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    await new Promise((r) => setTimeout(r, 200))
    stop = true
    await load
    expect(outcomes.failed).toBeGreaterThan(0)
    expect(outcomes.ok).toBeGreaterThan(okBeforeRestart)
    for (let i = 0; i < 4; i++) {
      const r = await keel
        .tenant(`t${i}`)
        .query<{ t: string }>(`SELECT DISTINCT tenant_id AS t FROM ${table}`)
      expect(r.rows).toEqual([{ t: `t${i}` }])
    }
    expect((await keel.health()).primary.status).toBe('up')
  })
})
