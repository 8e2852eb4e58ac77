import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Set once the stack is known up in this run: by scripts/test.sh, or by the first project's setup. */
const STACK_UP = 'KEEL_TEST_STACK_UP'

/**
 * Every suite talks to the project's own stack (primary, two replicas, Redis on free loopback ports).
 * `up` is idempotent: it starts whatever is not running and rewrites .keel/stack.json. Each project of a
 * workspace run (core, adapter-conformance, examples) names this setup, and scripts/test.sh has already
 * run `up`: it runs, and prints the stack's block, once per run.
 */
export default function setup(): void {
  if (process.env[STACK_UP] === '1') return
  const root = join(dirname(fileURLToPath(import.meta.url)), '..')
  execFileSync(process.execPath, [join(root, 'scripts/stack.mjs'), 'up'], {
    stdio: 'inherit',
    timeout: 180_000,
  })
  process.env[STACK_UP] = '1'
}
