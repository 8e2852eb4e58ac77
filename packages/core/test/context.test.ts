import { afterAll, describe, expect, it } from 'vitest'
import { KeelError } from '../src/index.js'
import { testKeel } from './support/keel.js'

const keel = testKeel()
afterAll(() => keel.close())

describe('keel.run / keel.current', () => {
  it('gives deep code the request tenant across awaits, timers and concurrent requests', async () => {
    const deep = async () => {
      await new Promise((r) => setTimeout(r, Math.random() * 10))
      const db = keel.current()
      const r = await db.query<{ t: string }>("SELECT current_setting('app.tenant_id', true) AS t")
      return [db.tenantId, r.rows[0]?.t]
    }
    const ids = Array.from({ length: 20 }, (_, i) => `tenant-${i}`)
    const results = await Promise.all(ids.map((id) => keel.run(keel.tenant(id), deep)))
    expect(results).toEqual(ids.map((id) => [id, id]))
  })

  it('throws KEEL_NO_TENANT_CONTEXT outside run(); maybeCurrent() is undefined', () => {
    expect(() => keel.current()).toThrow(expect.objectContaining({ code: 'KEEL_NO_TENANT_CONTEXT' }))
    expect(keel.maybeCurrent()).toBeUndefined()
  })

  it('refuses to run with something that is not a tenant client', () => {
    expect(() => keel.run({ tenantId: 'x' } as never, () => 1)).toThrow(KeelError)
  })
})

describe('keel.close', () => {
  it('finishes work in flight, then refuses new work with KEEL_CLOSED', async () => {
    const k = testKeel()
    const db = k.tenant('acme')
    const inFlight = db.query<{ one: number }>('SELECT 1 AS one FROM pg_sleep(0.1)')
    await new Promise((r) => setTimeout(r, 20))
    const closing = k.close()
    expect((await inFlight).rows[0]?.one).toBe(1)
    await closing
    await expect(db.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_CLOSED' })
    await expect(db.transaction(async () => 1)).rejects.toMatchObject({ code: 'KEEL_CLOSED' })
    expect(() => k.tenant('acme')).toThrow(expect.objectContaining({ code: 'KEEL_CLOSED' }))
    await k.close() // idempotent
    expect((await k.health()).status).toBe('down')
  })

  it('reports the primary in health()', async () => {
    const h = await keel.health()
    expect(h.status).toBe('up')
    expect(h.primary).toMatchObject({ status: 'up', role: 'primary', address: '127.0.0.1' })
    expect(JSON.stringify(h)).not.toContain(':app@')
  })
})
