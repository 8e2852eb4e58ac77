import { defineConfig } from 'tsup'

export default defineConfig({
  // The library (both formats, for import and require) and the `keel` bin (ESM only, run by node).
  entry: { index: 'src/index.ts', cli: 'src/cli.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // Runtime deps stay external so users dedupe pg/zod with their own copies.
  external: ['pg', 'zod', 'commander', 'libpg-query'],
})
