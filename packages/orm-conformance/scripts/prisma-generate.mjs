// Generates the Prisma client (prisma/schema.prisma -> generated/prisma) without network: the package's
// build, typecheck and test setup run it. `prisma generate` resolves a schema engine binary before it
// starts (and downloads one when none is installed) although Prisma 7 never runs it to generate; the
// stub satisfies that check. CHECKPOINT_DISABLE stops the CLI's update check.
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
execFileSync(join(root, 'node_modules/.bin/prisma'), ['generate', '--schema', 'prisma/schema.prisma'], {
  cwd: root,
  stdio: process.env.KEEL_PRISMA_QUIET === '1' ? 'pipe' : 'inherit',
  env: {
    ...process.env,
    PRISMA_SCHEMA_ENGINE_BINARY:
      process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? join(root, 'scripts/schema-engine-stub.sh'),
    CHECKPOINT_DISABLE: '1',
    PRISMA_HIDE_UPDATE_MESSAGE: '1',
  },
})
