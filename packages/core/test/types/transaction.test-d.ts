// Enabled when branch i11-split lands (the public Transaction exposes only what a callback may call):
// until then it is excluded in tsconfig.types.json and vitest.types.config.ts. ADR 0029.
import type { TenantClient, Transaction } from '@keel/core'
import { expectTypeOf, test } from 'vitest'

declare const db: TenantClient

test('a transaction callback cannot end, close or reach the outbox of its transaction', async () => {
  await db.transaction(async (tx) => {
    expectTypeOf(tx).toHaveProperty('query')
    expectTypeOf(tx).toHaveProperty('transaction')
    expectTypeOf(tx).toHaveProperty('enqueue')
    expectTypeOf(tx).toHaveProperty('tenantId')
    expectTypeOf(tx).not.toHaveProperty('commit')
    expectTypeOf(tx).not.toHaveProperty('rollback')
    expectTypeOf(tx).not.toHaveProperty('close')
    expectTypeOf(tx).not.toHaveProperty('outbox')
  })
  expectTypeOf<Transaction>().not.toHaveProperty('commit')
})
