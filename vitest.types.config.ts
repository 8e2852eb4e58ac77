import { defineConfig } from 'vitest/config'

// `pnpm run test:types`: the type tests only (no stack needed). ADR 0029.
export default defineConfig({
  test: {
    include: [],
    typecheck: {
      enabled: true,
      only: true,
      include: ['packages/*/test/types/**/*.test-d.ts'],
      tsconfig: './tsconfig.types.json',
      ignoreSourceErrors: false,
    },
  },
})
