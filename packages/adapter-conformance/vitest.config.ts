import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url))

export default defineConfig({
  // The suite runs the adapters' and core's sources, not a dist that may be stale (and one copy of
  // core, so KeelError is one class for the adapters and the tests).
  resolve: {
    alias: {
      '@keel/core': source('../core/src/index.ts'),
      '@keel/express': source('../express-adapter/src/index.ts'),
      '@keel/fastify': source('../fastify-adapter/src/index.ts'),
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../scripts/vitest-global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Tests stop Redis and hold connections on the shared stack: one file at a time.
    fileParallelism: false,
  },
})
