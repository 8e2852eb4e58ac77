import type { StackPgBouncer } from '../../../../scripts/stack/client.mjs'
import { readStack, stackCtl } from './stack.js'

export type { StackPgBouncer }

/**
 * The stack's PgBouncers in transaction mode in front of the primary, started on demand (the
 * suites that need them call this in beforeAll; `stack.mjs down` stops them).
 */
export async function pgbouncer(): Promise<{
  plain: StackPgBouncer
  discardAll: StackPgBouncer
  prepared: StackPgBouncer
}> {
  await stackCtl('up', 'pgbouncer')
  const bouncers = readStack().pgbouncer
  if (bouncers === undefined) throw new Error('stack.mjs up pgbouncer did not record its PgBouncers')
  return bouncers
}
