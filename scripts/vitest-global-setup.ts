import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * Every suite talks to the project's own stack (primary, two replicas, Redis on free loopback ports).
 * `up` is idempotent: it starts whatever is not running and rewrites .keel/stack.json.
 */
export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..')
  execFileSync(process.execPath, [join(root, 'scripts/stack.mjs'), 'up'], {
    stdio: 'inherit',
    timeout: 180_000,
  })
}
