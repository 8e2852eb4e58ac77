import { fileURLToPath } from 'node:url'
import { defineConfig, mergeConfig } from 'vitest/config'
import core from '../core/vitest.config.js'

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url))

// Core's setup (the stack's global setup, timeouts, one file at a time), plus: the suite runs core's
// sources (one copy of core and of pg, so the pool keel lends is the tests' pg.Pool), the Prisma client
// is generated before the files run, and every file runs under TZ=Asia/Tokyo, where a date or
// timestamp parsed the wrong way shifts.
export default mergeConfig(
  core,
  defineConfig({
    resolve: { alias: { '@keel/core': source('../core/src/index.ts') } },
    test: {
      globalSetup: ['./scripts/vitest-prisma-setup.ts'],
      env: { TZ: 'Asia/Tokyo' },
    },
  }),
)
