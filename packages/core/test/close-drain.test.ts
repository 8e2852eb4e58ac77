import { afterEach, describe, expect, it } from 'vitest'
import { isKeelError, type Keel } from '../src/index.js'
import { testKeel } from './support/keel.js'

let keel: Keel | undefined

afterEach(async () => {
  await keel?.close()
  keel = undefined
})

const codeOf = (error: unknown) => (isKeelError(error) ? error.code : String(error))

/** Resolves what each call did, or 'pending' for those still unsettled after `boundMs` (a bound). */
async function settle(calls: Array<Promise<unknown>>, boundMs: number): Promise<string[]> {
  const out: string[] = calls.map(() => 'pending')
  const all = Promise.all(
    calls.map((call, i) =>
      call.then(
        () => {
          out[i] = 'ok'
        },
        (error: unknown) => {
          out[i] = codeOf(error)
        },
      ),
    ),
  )
  await Promise.race([all, new Promise((r) => setTimeout(r, boundMs))])
  return out
}

describe('keel.close() drains what it accepted', () => {
  it.each([
    ['connectionTimeoutMs 5000', 5_000],
    ['connectionTimeoutMs 0 (wait however long)', 0],
  ])(
    'pool max 2, six calls in flight (%s): close() lets all six finish, then refuses new calls with KEEL_CLOSED',
    async (_label, connectionTimeoutMs) => {
      const k = testKeel({ pool: { max: 2, connectionTimeoutMs } })
      keel = k
      const dbs = ['a', 'a', 'b', 'b', 'c', 'c'].map((t) => k.tenant(t))
      // One connection per tenant (tenantConnections 0.5 of 2): two run, one waits for the pool, three
      // wait in their tenant's queue.
      const calls = dbs.map((db) => db.query<{ one: number }>('SELECT pg_sleep(0.2), 1 AS one'))
      const settledAtClose: string[] = []
      const outcomes = calls.map(() => 'pending')
      calls.forEach((call, i) => {
        call.then(
          () => {
            outcomes[i] = 'ok'
          },
          (error: unknown) => {
            outcomes[i] = codeOf(error)
          },
        )
      })
      const closing = k.close().then(() => settledAtClose.push(...outcomes))
      // New work is refused at once, while the accepted calls still run.
      await expect(dbs[0]!.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_CLOSED' })
      expect(() => k.tenant('d')).toThrow(expect.objectContaining({ code: 'KEEL_CLOSED' }))
      expect(await settle(calls, 10_000)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok'])
      await Promise.race([closing, new Promise((r) => setTimeout(r, 10_000))])
      // close() resolved only after every accepted call had settled.
      expect(settledAtClose).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok'])
      await expect(dbs[2]!.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_CLOSED' })
      await expect(dbs[4]!.transaction(async (tx) => tx.query('SELECT 1'))).rejects.toMatchObject({
        code: 'KEEL_CLOSED',
      })
    },
  )

  it('a transaction in progress at close() commits; one queued behind it runs too', async () => {
    const k = testKeel({ pool: { max: 1 }, limits: { tenantConnections: 1 } })
    keel = k
    const db = k.tenant('tx')
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    const first = db.transaction(async (tx) => {
      await tx.query('SELECT 1')
      await gate
      const r = await tx.query<{ n: number }>('SELECT 2 AS n')
      return r.rows[0]?.n
    })
    const second = db.query<{ n: number }>('SELECT 3 AS n')
    // Let the transaction take the one connection before close() starts.
    await new Promise((r) => setTimeout(r, 100))
    const closing = k.close()
    setTimeout(release, 200)
    expect(await first).toBe(2)
    expect((await second).rows[0]?.n).toBe(3)
    await closing
  })

  it('past postgres.closeTimeoutMs, calls still running or queued are cancelled with KEEL_CLOSED', async () => {
    const k = testKeel({ pool: { max: 1 }, limits: { tenantConnections: 1 }, closeTimeoutMs: 300 })
    keel = k
    const db = k.tenant('slow')
    const running = db.query('SELECT pg_sleep(30)')
    const queued = db.query('SELECT 1')
    await new Promise((r) => setTimeout(r, 100))
    const closing = k.close()
    expect(await settle([running, queued], 10_000)).toEqual(['KEEL_CLOSED', 'KEEL_CLOSED'])
    expect(await settle([closing], 10_000)).toEqual(['ok'])
  })
})
