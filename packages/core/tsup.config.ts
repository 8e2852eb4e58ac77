import { defineConfig } from 'tsup'

export default defineConfig({
  // Two entries, one per package.json export: the root and the HTTP kit for adapters ('@keel/core/http').
  entry: { index: 'src/index.ts', http: 'src/http/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // keel's Lua scripts (src/jobs/lua/*.lua) are bundled as strings: nothing to ship or read at run time.
  loader: { '.lua': 'text' },
  // Runtime deps stay external so users dedupe pg/zod with their own copies.
  external: ['pg', 'lru-cache', 'zod', 'ioredis', 'bullmq', '@opentelemetry/api'],
})
