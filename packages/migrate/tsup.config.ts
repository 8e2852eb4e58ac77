import { defineConfig } from 'tsup'

export default defineConfig({
  // The library entry and the `keel` bin (a shebang'd ESM file).
  entry: { index: 'src/index.ts', cli: 'src/cli.ts' },
  format: ['esm'],
  dts: { entry: { index: 'src/index.ts' } },
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // Runtime deps stay external so users dedupe pg/zod with their own copies.
  external: ['pg', 'zod', 'commander'],
})
