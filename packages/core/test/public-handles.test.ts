import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest'
import { type Keel, TenantClient, type Transaction } from '../src/index.js'
import { testKeel } from './support/keel.js'

// What user code can reach of the handles keel gives it (ADR 0030): a transaction callback gets query,
// savepoints and enqueue, never commit/rollback/close/outbox; sessions and keel are built by keel only.

let keel: Keel
beforeAll(() => {
  keel = testKeel()
})
afterAll(() => keel.close())

describe('public handles', () => {
  it("a transaction callback's handle has no commit, rollback, close or outbox, in types or at run time", async () => {
    expectTypeOf<keyof Transaction>().toEqualTypeOf<'tenantId' | 'query' | 'transaction' | 'enqueue'>()
    const seen = await keel.tenant('acme').transaction(async (tx) => {
      const nested = await tx.transaction(async (sp) => internalsOf(sp))
      await tx.query('SELECT 1')
      return { outer: internalsOf(tx), nested }
    })
    expect(seen).toEqual({ outer: [], nested: [] })
  })

  it('a failed callback still rolls back, and the handle is closed after it', async () => {
    let kept: Transaction | undefined
    await expect(
      keel.tenant('acme').transaction(async (tx) => {
        kept = tx
        await tx.query('SELECT 1')
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    await expect(kept!.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_TRANSACTION_CLOSED' })
  })

  it('TenantClient and Keel are built by keel only: their constructors are private', () => {
    const db = keel.tenant('acme')
    expect(db).toBeInstanceOf(TenantClient)
    // Type-level: these lines must not compile (checked by `pnpm typecheck`); never run.
    const forge = () => {
      // @ts-expect-error the constructor is private
      new TenantClient()
      // @ts-expect-error the constructor is private
      ;new (keel.constructor as typeof Keel)()
    }
    expect(typeof forge).toBe('function')
  })
})

/** The members a callback must not reach, found on the handle (own, inherited, or by `in`). */
function internalsOf(tx: Transaction): string[] {
  return ['commit', 'rollback', 'close', 'outbox', 'ended', 'context'].filter((name) => name in tx)
}
