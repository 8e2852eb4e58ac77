import { defineConfig } from 'vitest/config'

// One run over every package that has tests (and the example app); each project keeps its own config.
// Suites inject faults into the one shared stack (stop Redis or a replica, kill backends), so no two
// files of any project may run at once: one worker for the whole run (ADR 0007).
export default defineConfig({
  test: {
    projects: ['packages/*/vitest.config.ts', 'examples/vitest.config.ts'],
    fileParallelism: false,
  },
})
