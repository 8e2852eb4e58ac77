import { randomUUID } from 'node:crypto'
import type { Logger } from '../config/config-schema.js'
import type { CacheTelemetry } from '../telemetry/cache-telemetry.js'
import { type InvalidationMessage, parseBusMessage } from './bus-message.js'
import { type CacheKeys, localKey } from './cache-keys.js'
import type { FillWaiters } from './fill-waiters.js'
import { InvalidationAcks } from './invalidation-acks.js'
import type { LocalTier } from './local-tier.js'
import type { SharedTier } from './shared-tier.js'

/** The most invalidations remembered while Redis is away; past it they are dropped (and logged). */
const MAX_DEFERRED = 10_000

export type BusTier = Pick<SharedTier, 'processId' | 'usable' | 'invalidate' | 'publish'>

/**
 * Invalidation across processes: an invalidation is applied here at once, then bumps the Redis
 * counters, drops the values and is broadcast in one transaction; every subscriber (this process
 * included) acknowledges once it dropped its copies, and `invalidate` resolves when all did (or after
 * invalidationAckTimeoutMs). Invalidations Redis could not take are replayed when it is back; since
 * others may have been missed meanwhile, L1 then starts over. The bus also hands fill messages to the
 * callers waiting for them.
 */
export class InvalidationBus {
  readonly #local: Pick<LocalTier, 'drop' | 'forgetAll'>
  readonly #tier: BusTier | undefined
  readonly #keys: CacheKeys
  readonly #fills: Pick<FillWaiters, 'wake'>
  readonly #telemetry: Pick<CacheTelemetry, 'breaker'>
  readonly #logger: Logger | undefined
  readonly #ackTimeoutMs: number
  readonly #acks = new InvalidationAcks()
  /** Invalidations Redis could not take: replayed when it is back. */
  readonly #deferred: Array<{ scope: string; keys: readonly string[]; tags: readonly string[] }> = []

  constructor(
    local: Pick<LocalTier, 'drop' | 'forgetAll'>,
    tier: BusTier | undefined,
    keys: CacheKeys,
    fills: Pick<FillWaiters, 'wake'>,
    telemetry: Pick<CacheTelemetry, 'breaker'>,
    logger: Logger | undefined,
    ackTimeoutMs: number,
  ) {
    this.#local = local
    this.#tier = tier
    this.#keys = keys
    this.#fills = fills
    this.#telemetry = telemetry
    this.#logger = logger
    this.#ackTimeoutMs = ackTimeoutMs
  }

  /**
   * Drops keys and every key carrying the tags, here and in every process, and makes sure no load that
   * began before it can cache or return the old value. Resolves once the other processes confirmed
   * (or after invalidationAckTimeoutMs). Without Redis it is remembered and sent when Redis is back.
   */
  async invalidate(scope: string, keys: readonly string[], tags: readonly string[]): Promise<void> {
    this.#local.drop(scope, keys, tags)
    const tier = this.#tier
    if (tier === undefined) return
    if (!tier.usable()) {
      this.#defer(scope, keys, tags)
      return
    }
    const id = randomUUID()
    const message: InvalidationMessage = {
      t: 'inv',
      id,
      from: tier.processId,
      ack: this.#keys.ackChannel(tier.processId),
      s: scope,
      k: keys,
      g: tags,
    }
    const acked = this.#acks.expect(id)
    const started = Date.now()
    let receivers: number
    try {
      receivers = await tier.invalidate(
        keys.map((k) => this.#keys.keyVersion(scope, k)),
        keys.map((k) => this.#keys.value(scope, k)),
        tags.map((t) => this.#keys.tagVersion(scope, t)),
        JSON.stringify(message),
        this.#ackTimeoutMs,
      )
    } catch (error) {
      acked.cancel()
      this.#logger?.warn({ err: error }, 'keel cache: invalidation deferred until Redis is back')
      this.#defer(scope, keys, tags)
      return
    }
    // Every subscriber, this process included, acknowledges after dropping its copies. The budget
    // counts from the publish: counting a cluster's subscribers may have taken part of it.
    await acked.wait(receivers, Math.max(0, this.#ackTimeoutMs - (Date.now() - started)))
  }

  /** A message on the events channel or on this process's ack channel. */
  onMessage(channel: string, raw: string): void {
    const tier = this.#tier
    if (tier === undefined) return
    if (channel !== this.#keys.events) {
      this.#acks.received(raw)
      return
    }
    const message = parseBusMessage(raw)
    if (message?.t === 'fill') {
      this.#fills.wake(localKey(message.s, message.k))
    } else if (message?.t === 'inv') {
      if (message.from !== tier.processId) this.#local.drop(message.s, message.k, message.g)
      tier.publish(message.ack, message.id)
    }
  }

  /**
   * The first subscription is confirmed. L1 kept entries before only while Redis was unusable (LocalTier
   * keeps none while Redis answers unheard): those may have missed invalidations, so L1 starts over,
   * and what could not be sent meanwhile is sent.
   */
  onListening(): void {
    this.#local.forgetAll()
    this.replay()
  }

  /** The subscription came back after a loss: invalidations may have been missed, so L1 starts over. */
  onRedisBack(): void {
    this.#local.forgetAll()
    this.#logger?.info({ signal: 'cache_redis_restored' }, 'keel cache: Redis is back; L1 cleared')
    this.replay()
  }

  /**
   * Sends the invalidations Redis could not take. Called whenever Redis may be back: the subscription
   * or the command connection reconnected, or the breaker closed; whichever comes first, one that fails
   * again is deferred again for the next.
   */
  replay(): void {
    const pending = this.#deferred.splice(0)
    for (const { scope, keys, tags } of pending) {
      this.invalidate(scope, keys, tags).catch(() => undefined)
    }
  }

  onBreaker(open: boolean): void {
    this.#telemetry.breaker(open)
    if (open) {
      this.#logger?.warn(
        { signal: 'cache_redis_down' },
        'keel cache: Redis unavailable, serving from L1 and loaders',
      )
    } else {
      // Commands work again; the subscriber may not have noticed an outage, so treat it as one.
      this.onRedisBack()
    }
  }

  #defer(scope: string, keys: readonly string[], tags: readonly string[]): void {
    if (this.#deferred.length < MAX_DEFERRED) this.#deferred.push({ scope, keys, tags })
    else this.#logger?.error({ scope }, 'keel cache: too many deferred invalidations; dropping')
  }
}
