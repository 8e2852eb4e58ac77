import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { cachified } from '@epic-web/cachified'
import KeyvRedis from '@keyv/redis'
import { BentoCache, type BentoStore, bentostore } from 'bentocache'
import { memoryDriver } from 'bentocache/drivers/memory'
import { redisBusDriver, redisDriver } from 'bentocache/drivers/redis'
import { type Cache as CacheManager, createCache } from 'cache-manager'
import { CacheableMemory } from 'cacheable'
import { redisCacheAdapter } from 'cachified-redis-adapter'
import { Keyv } from 'keyv'
import { createClient } from 'redis'
import { TTL_MS } from './cache-common.js'
import { repoRoot } from './stack.js'

/**
 * The caches the cache bench compares, each set up the way its README recommends, with the stack's
 * Redis where it has a Redis tier. Shared by the in-process measurements (bench/src/cache.ts) and the
 * stampede workers (bench/src/cache-worker.ts), so both measure the same configuration.
 */

function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url)
  return { host: u.hostname, port: Number(u.port || 6379) }
}

// ------------------------------------------------------------------------------------------ bentocache

export type Bento = BentoCache<Record<string, BentoStore>>

export interface BentoSetup {
  /** undefined: no L1 (a Redis-only store). */
  l1?: { serialize: boolean } | undefined
  /** The Redis bus that keeps L1s in sync across processes (multi-tier only). */
  bus: boolean
}

/**
 * bentocache's multi-tier setup from its docs: `memoryDriver({ maxSize: '10mb' })` as L1 (entries
 * serialized, the default), `redisDriver` as L2, `redisBusDriver` to sync L1s. `serialize: false` keeps
 * decoded objects in L1 (bentocache's own fast path; it then cannot bound L1 by bytes).
 */
export function createBento(redisUrl: string, prefix: string, setup: BentoSetup): Bento {
  const connection = hostPort(redisUrl)
  let store = bentostore()
  if (setup.l1 !== undefined) {
    store = store.useL1Layer(
      setup.l1.serialize
        ? memoryDriver({ maxSize: '10mb', maxItems: 10_000 })
        : memoryDriver({ serialize: false, maxItems: 10_000 }),
    )
  }
  store = store.useL2Layer(redisDriver({ connection, prefix }))
  if (setup.bus) store = store.useBus(redisBusDriver({ connection }))
  // The store's name suffixes the bus channel: a fresh one per run keeps runs apart.
  const name = `bench_${prefix.replace(/[^A-Za-z0-9]/g, '_')}`
  return new BentoCache({ default: name, stores: { [name]: store }, ttl: TTL_MS })
}

// --------------------------------------------------------------------------------------- cache-manager

/** `createCache()` with no stores: cache-manager's default in-memory Keyv (a Map). */
export function createCacheManagerMemory(): CacheManager {
  return createCache({ ttl: TTL_MS })
}

/**
 * cache-manager's documented two-layer setup: `CacheableMemory` (LRU) in front of `@keyv/redis`.
 * `redisOnly` drops the memory layer (for the Redis-hit rows).
 */
export function createCacheManagerTiered(
  redisUrl: string,
  namespace: string,
  redisOnly = false,
): CacheManager {
  const redis = new Keyv({ store: new KeyvRedis(redisUrl), namespace })
  const stores = redisOnly
    ? [redis]
    : [new Keyv({ store: new CacheableMemory({ ttl: TTL_MS, lruSize: 10_000 }) }), redis]
  return createCache({ stores, ttl: TTL_MS })
}

// ------------------------------------------------------------------------------------------- cachified

export interface CachifiedSetup {
  read(key: string, load: () => Promise<unknown>): Promise<unknown>
  close(): Promise<void>
}

/** @epic-web/cachified with its documented Redis adapter (cachified-redis-adapter over node-redis). */
export async function createCachified(redisUrl: string): Promise<CachifiedSetup> {
  const client = createClient({ url: redisUrl })
  client.on('error', () => undefined)
  await client.connect()
  // One adapter per process: cachified dedupes concurrent loads per cache object.
  const cache = redisCacheAdapter(client as unknown as Parameters<typeof redisCacheAdapter>[0])
  return {
    read: (key, load) => cachified({ key, cache, getFreshValue: load, ttl: TTL_MS }),
    close: async () => {
      await client.quit().catch(() => undefined)
    },
  }
}

// ------------------------------------------------------------------------------- stampede worker protocol

/** What each stampede worker (bench/dist/cache-worker.js) runs: one library per worker process. */
export const STAMPEDE_VARIANTS = ['none', 'cache-manager', 'cachified', 'bentocache', 'keel'] as const
export type StampedeVariant = (typeof STAMPEDE_VARIANTS)[number]

export interface GoMessage {
  type: 'go'
  key: string
  counterKey: string
  reads: number
  loaderMs: number
}

export interface DoneMessage {
  type: 'done'
  /** Epoch ms (sub-ms precision) at which this worker started its reads. */
  releasedAt: number
  /** Until the last of its reads resolved, from releasedAt. */
  lastMs: number
  ok: number
  wrong: number
  errors: number
  firstError: string | undefined
}

// ------------------------------------------------------------------------------------------- versions

/** Installed versions (read from package.json files: not every package exports its package.json). */
export function cacheLibraryVersions(): Record<string, string> {
  const bench = join(repoRoot, 'bench/node_modules')
  const core = join(repoRoot, 'packages/core')
  const read = (file: string): string => {
    try {
      return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
    } catch {
      return 'unknown'
    }
  }
  const out: Record<string, string> = { '@keel/core': read(join(core, 'package.json')) }
  out['lru-cache (keel)'] = read(join(core, 'node_modules/lru-cache/package.json'))
  out['ioredis (keel)'] = read(join(core, 'node_modules/ioredis/package.json'))
  for (const name of [
    'lru-cache',
    'ioredis',
    'bentocache',
    'cache-manager',
    'keyv',
    'cacheable',
    '@keyv/redis',
    '@epic-web/cachified',
    'cachified-redis-adapter',
    'redis',
  ]) {
    out[name] = read(join(bench, name, 'package.json'))
  }
  return out
}
