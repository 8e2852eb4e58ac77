import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** The Prisma client the Prisma test imports is generated (offline) before any file runs. */
export default function setup(): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('./prisma-generate.mjs', import.meta.url))], {
    env: { ...process.env, KEEL_PRISMA_QUIET: '1' },
    stdio: 'inherit',
  })
}
