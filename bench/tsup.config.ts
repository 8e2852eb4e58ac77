import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['src/*.ts'],
  format: ['esm'],
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // Benchmarks measure the built @keel/core and the pinned pg, never a bundled copy.
  external: ['pg', '@keel/core'],
})
