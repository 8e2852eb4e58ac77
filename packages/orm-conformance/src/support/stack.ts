import { readFileSync } from 'node:fs'
import { type KeelStack, stackCtl, stackFile } from '../../../../scripts/stack/client.mjs'

// The ORM suite's own test support (schema, keel, stack): it runs as a package of its own and
// imports nothing from another package's test folder.

export { stackCtl }

/** The running stack's URLs (the vitest global setup has already run `stack.mjs up`). */
export function readStack(): KeelStack {
  return JSON.parse(readFileSync(stackFile(), 'utf8')) as KeelStack
}
