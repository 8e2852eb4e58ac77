import { readFileSync } from 'node:fs'
import { type KeelStack, REPO_ROOT, stackCtl, stackFile } from '../../../../scripts/stack/client.mjs'

export const repoRoot = REPO_ROOT
export { stackCtl }
export type Stack = KeelStack

/** The running stack's URLs (the vitest global setup has already run `stack.mjs up`). */
export function readStack(): KeelStack {
  return JSON.parse(readFileSync(stackFile(), 'utf8')) as KeelStack
}
