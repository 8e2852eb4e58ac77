import { fileURLToPath } from 'node:url'
import { defineConfig, mergeConfig } from 'vitest/config'
import core from '../core/vitest.config.js'

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url))

// Core's setup (the stack's global setup, timeouts, one file at a time), plus: the suite runs the
// adapters' and core's sources, not a dist that may be stale, and one copy of core, so KeelError is
// one class for the adapters and the tests.
export default mergeConfig(
  core,
  defineConfig({
    resolve: {
      alias: {
        // The subpath first: an alias also matches `<key>/...`, so '@keel/core' alone would swallow it.
        '@keel/core/http': source('../core/src/http/index.ts'),
        '@keel/core': source('../core/src/index.ts'),
        '@keel/express': source('../express-adapter/src/index.ts'),
        '@keel/fastify': source('../fastify-adapter/src/index.ts'),
      },
    },
  }),
)
