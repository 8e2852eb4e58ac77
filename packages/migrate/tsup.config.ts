import { defineConfig } from 'tsup'

// dist/ is emptied by the build script, not by tsup: the two builds run at once and one's clean could
// delete the other's output.
// Runtime deps stay external so users dedupe pg/zod with their own copies.
const external = ['pg', 'zod', 'commander', 'libpg-query']

export default defineConfig([
  // The library: both formats, for import and require, with declarations.
  {
    entry: { index: 'src/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: false,
    target: 'node20',
    platform: 'node',
    external,
  },
  // The `keel` bin: ESM only, run by node (its shebang makes tsup mark it executable).
  {
    entry: { cli: 'src/cli.ts' },
    format: ['esm'],
    sourcemap: true,
    clean: false,
    target: 'node20',
    platform: 'node',
    external,
  },
])
