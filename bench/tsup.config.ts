import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['src/*.ts'],
  format: ['esm'],
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  // Benchmarks measure the built @keel/core and the pinned libraries, never a bundled copy.
  external: [
    'pg',
    '@keel/core',
    '@keel/migrate',
    'lru-cache',
    'libpg-query',
    'ioredis',
    'redis',
    'bentocache',
    'cache-manager',
    'cacheable',
    'keyv',
    '@keyv/redis',
    '@epic-web/cachified',
    'cachified-redis-adapter',
    'bullmq',
    'zod',
    'autocannon',
    'drizzle-orm',
    'kysely',
    'pg-copy-streams',
  ],
})
