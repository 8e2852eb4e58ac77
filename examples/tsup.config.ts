import { defineConfig } from 'tsup'

export default defineConfig({
  // Each is a process the demo (or you) runs: node examples/dist/<name>.js
  entry: ['src/demo.ts', 'src/server.ts', 'src/worker.ts', 'src/seed.ts', 'src/tour.ts'],
  format: ['esm'],
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  external: ['@keel/core', '@keel/express', '@keel/fastify', 'pg', 'drizzle-orm'],
})
