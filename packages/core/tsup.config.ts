import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // Runtime deps stay external so users dedupe pg/zod with their own copies.
  external: ['pg', 'lru-cache', 'zod', 'ioredis', 'bullmq', '@opentelemetry/api'],
})
