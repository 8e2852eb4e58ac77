import { defineConfig, type Plugin } from 'vitest/config'

/** keel's .lua files as text, as tsup's `loader: { '.lua': 'text' }` bundles them (jobs/lua/). */
const luaText: Plugin = {
  name: 'keel-lua-text',
  enforce: 'pre',
  transform(code, id) {
    if (!id.endsWith('.lua')) return undefined
    return { code: `export default ${JSON.stringify(code)}`, map: null }
  },
}

export default defineConfig({
  plugins: [luaText],
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../scripts/vitest-global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Suites inject faults into the shared stack (stop a replica, kill backends): run files one by one.
    fileParallelism: false,
  },
})
