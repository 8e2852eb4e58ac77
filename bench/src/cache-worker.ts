/**
 * One process of the cache bench's stampede: forked by bench/dist/cache.js with the library to use
 * (CACHE_WORKER_VARIANT), it sets that library up, warms it on a key of its own, says `ready`, and on
 * each `go` fires `reads` concurrent reads of one cold key whose loader counts its calls in Redis
 * (INCR), then sleeps `loaderMs`. It answers `done` with what its callers got. Not meant to be run by
 * hand.
 */

import { createKeelCache, dashboardValue, isDashboard, rawRedis, TTL_MS } from './lib/cache-common.js'
import {
  createBento,
  createCacheManagerTiered,
  createCachified,
  type DoneMessage,
  type GoMessage,
  STAMPEDE_VARIANTS,
  type StampedeVariant,
} from './lib/cache-peers.js'

interface Subject {
  read(key: string, load: () => Promise<unknown>): Promise<unknown>
  close(): Promise<void>
}

async function subjectFor(variant: StampedeVariant, env: NodeJS.ProcessEnv): Promise<Subject> {
  const redisUrl = env.CACHE_WORKER_REDIS_URL!
  const prefix = env.CACHE_WORKER_PREFIX!
  switch (variant) {
    case 'none': {
      // No protection: read, and on a miss load and write back, as hand-rolled caching code does.
      const redis = rawRedis(redisUrl)
      return {
        read: async (key, load) => {
          const hit = await redis.get(key)
          if (hit !== null) return JSON.parse(hit)
          const value = await load()
          await redis.set(key, JSON.stringify(value), 'PX', TTL_MS)
          return value
        },
        close: async () => {
          await redis.quit().catch(() => undefined)
        },
      }
    }
    case 'cache-manager': {
      const cache = createCacheManagerTiered(redisUrl, `${prefix}-cm`)
      return {
        read: (key, load) => cache.wrap(key, load, TTL_MS),
        close: async () => {
          await cache.disconnect().catch(() => undefined)
        },
      }
    }
    case 'cachified':
      return createCachified(redisUrl)
    case 'bentocache': {
      const bento = createBento(redisUrl, `${prefix}-bento`, { l1: { serialize: true }, bus: true })
      return {
        read: (key, load) => bento.getOrSet({ key, factory: load, ttl: TTL_MS }),
        close: async () => {
          await bento.disconnectAll().catch(() => undefined)
        },
      }
    }
    case 'keel': {
      const keel = createKeelCache({
        redisUrl,
        primaryUrl: env.CACHE_WORKER_PRIMARY_URL!,
        prefix: `${prefix}-keel`,
      })
      const db = keel.tenant('t001')
      return {
        read: (key, load) => db.cached({ key, ttlMs: TTL_MS }, load),
        close: () => keel.close(),
      }
    }
  }
}

function now(): number {
  return performance.timeOrigin + performance.now()
}

async function main(): Promise<void> {
  const variant = process.env.CACHE_WORKER_VARIANT as StampedeVariant
  if (!(STAMPEDE_VARIANTS as readonly string[]).includes(variant) || process.send === undefined) {
    console.error(`cache-worker: fork me from bench/dist/cache.js (variant ${JSON.stringify(variant)})`)
    process.exit(2)
  }
  const subject = await subjectFor(variant, process.env)
  const counter = rawRedis(process.env.CACHE_WORKER_REDIS_URL!)
  const loaderFor = (counterKey: string, ms: number) => async (): Promise<unknown> => {
    await counter.incr(counterKey)
    await new Promise((resolve) => setTimeout(resolve, ms))
    return dashboardValue()
  }
  // Connections up and the read path compiled once, on a key no other worker uses.
  const prefix = process.env.CACHE_WORKER_PREFIX!
  const warm = await subject.read(`${prefix}-warm-${variant}-${process.pid}`, loaderFor(`${prefix}-warm`, 1))
  if (!isDashboard(warm)) throw new Error(`${variant}: the warm-up read returned ${JSON.stringify(warm)}`)
  process.send!({ type: 'ready' })

  process.on('message', (message: GoMessage | { type: 'close' }) => {
    if (message.type === 'close') {
      void Promise.allSettled([subject.close(), counter.quit()]).then(() => process.exit(0))
      return
    }
    const releasedAt = now()
    const load = loaderFor(message.counterKey, message.loaderMs)
    const result: DoneMessage = {
      type: 'done',
      releasedAt,
      lastMs: 0,
      ok: 0,
      wrong: 0,
      errors: 0,
      firstError: undefined,
    }
    const reads = Array.from({ length: message.reads }, () =>
      subject.read(message.key, load).then(
        (value) => {
          if (isDashboard(value)) result.ok++
          else result.wrong++
          result.lastMs = Math.max(result.lastMs, now() - releasedAt)
        },
        (error: unknown) => {
          result.errors++
          result.firstError ??= error instanceof Error ? error.message : String(error)
          result.lastMs = Math.max(result.lastMs, now() - releasedAt)
        },
      ),
    )
    void Promise.all(reads).then(() => process.send!(result))
  })
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
