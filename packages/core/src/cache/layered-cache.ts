import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { CacheTelemetry } from '../telemetry/cache-telemetry.js'
import { CacheKeys } from './cache-keys.js'
import { CacheTargets } from './cache-targets.js'
import type { CachedOptions } from './cached-options.js'
import { FencedLoad } from './fenced-load.js'
import { FillWaiters } from './fill-waiters.js'
import { InvalidationBus } from './invalidation-bus.js'
import { LoaderElection } from './loader-election.js'
import { LoaderRunner } from './loader-runner.js'
import { LocalTier } from './local-tier.js'
import { RedisTier } from './redis-tier.js'
import { decodeEntry } from './serializer.js'
import { TwoTierHandler } from './two-tier-handler.js'
import { WaitCount } from './wait-count.js'

type CacheConfig = ResolvedConfig['cache']

/**
 * L1 (lru-cache, decoded values) in front of Redis (serialized entries), with one loader per key across
 * the fleet: concurrent misses in a process share one load; across processes a Redis lock elects one
 * loader and the others wait for its fill message (pub/sub, not polling), bounded by the lock's TTL.
 * Loads are fenced: a value computed from data that an invalidation has since replaced is never
 * cached (a Redis compare-and-set on the invalidation counters) and never returned to a caller who
 * asked after the invalidation resolved (the load runs again).
 *
 * This class is the cache stack: it builds the parts and hands each the few things it uses (ADR 0027,
 * laid out like bentocache's cache stack, two-tier handler, locks and bus):
 *
 *   LocalTier        L1 and the local fence: what enters L1 and what an invalidation drops
 *   RedisTier        the shared tier (one MGET a read, CAS writes, locks) behind a circuit breaker
 *   TwoTierHandler   the read path: L1, Redis, stale-while-revalidate, XFetch, soft timeout, sharing
 *   FencedLoad       a load that an invalidation fences out is run again
 *   LoaderElection   one loader per key across processes (Redis lock), the others wait for its fill
 *   LoaderRunner     runs the loader, fail-safe, writes by compare-and-set, keeps the value in L1
 *   InvalidationBus  invalidations and their acknowledgements, fills, replay after an outage
 */
export class LayeredCache {
  readonly #redis: RedisTier | undefined
  readonly #handler: TwoTierHandler
  readonly #bus: InvalidationBus

  constructor(config: CacheConfig, telemetry: CacheTelemetry, logger: Logger | undefined) {
    const keys = new CacheKeys(config.prefix)
    const local = new LocalTier(config.l1)
    const fills = new FillWaiters()
    const waiting = new WaitCount()
    const freeze = config.l1.freeze
    // The tier reports to the bus, which is built after it: its events are bound late, and none can
    // arrive before this constructor returns (the connections open asynchronously).
    let bus: InvalidationBus | undefined
    const redis =
      config.redis === undefined
        ? undefined
        : new RedisTier(
            {
              topology: config.redis,
              commandTimeoutMs: config.redis.commandTimeoutMs,
              keys,
              breaker: { threshold: config.breakerThreshold, resetMs: config.breakerResetMs },
              decode: (buffer) => decodeEntry(buffer, freeze),
              logger,
            },
            {
              onMessage: (channel, message) => bus?.onMessage(channel, message),
              onResubscribed: () => bus?.onRedisBack(),
              onListening: () => bus?.onListening(),
              onCommandsBack: () => bus?.replay(),
              onBreaker: (open) => bus?.onBreaker(open),
            },
          )
    this.#redis = redis
    if (redis !== undefined) local.keepOnlyWhen(() => redis.l1Safe())
    bus = new InvalidationBus(local, redis, keys, fills, telemetry, logger, config.invalidationAckTimeoutMs)
    this.#bus = bus
    const runner = new LoaderRunner(local, config, telemetry, logger)
    const shared =
      redis === undefined
        ? undefined
        : {
            tier: redis,
            election: new LoaderElection(redis, local, fills, runner, waiting, config.lockTtlMs),
          }
    const loads = new FencedLoad(shared, local, runner)
    this.#handler = new TwoTierHandler(
      new CacheTargets(keys),
      local,
      redis,
      loads,
      telemetry,
      logger,
      config,
      waiting,
    )
    telemetry.observeWaiters(() => waiting.count)
  }

  /** The value for a key: L1, then Redis, then the loader (once per key across the fleet). */
  get<T>(
    scope: string,
    tenantId: string | undefined,
    options: CachedOptions,
    loader: () => Promise<T>,
  ): Promise<T> {
    return this.#handler.get(scope, tenantId, options, loader)
  }

  /**
   * Drops keys and every key carrying the tags, here and in every process. Resolves once the other
   * processes confirmed (or after invalidationAckTimeoutMs).
   */
  invalidate(scope: string, keys: readonly string[], tags: readonly string[]): Promise<void> {
    return this.#bus.invalidate(scope, keys, tags)
  }

  get redisAvailable(): boolean {
    return this.#redis !== undefined && !this.#redis.breakerOpen
  }

  /** For health: the breaker is closed and Redis answers a PING now. */
  async redisHealthy(): Promise<boolean> {
    return this.redisAvailable && (await this.#redis!.ping())
  }

  async close(): Promise<void> {
    this.#handler.close()
    await this.#redis?.close()
  }
}
