import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['src/index.ts'],
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
