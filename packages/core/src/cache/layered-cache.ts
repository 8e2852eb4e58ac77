import { randomUUID } from 'node:crypto'
import type { Span } from '@opentelemetry/api'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { CacheResult, CacheTelemetry } from '../telemetry/cache-telemetry.js'
import { type CacheEntry, deepFreeze } from './cache-entry.js'
import { CacheKeys, localKey, localTag, ScopedMemo } from './cache-keys.js'
import type { CachedOptions } from './cached-options.js'
import { L1Store } from './l1-store.js'
import { LocalFence } from './local-fence.js'
import { type Read, RedisTier } from './redis-tier.js'
import { encodedSize, encodeEntry } from './serializer.js'

type CacheConfig = ResolvedConfig['cache']

interface Outcome {
  readonly entry: CacheEntry
  readonly result: CacheResult
}

/** What a key's addresses in both tiers owe to (scope, key) alone: built once, then memoized. */
interface KeyNames {
  readonly local: string
  readonly valueKey: string
  readonly keyVersion: string
  readonly lockKey: string
}

/** A tag's addresses: its L1 tag-index entry and its Redis invalidation counter. */
interface TagNames {
  readonly local: string
  readonly version: string
}

const NO_TAGS: readonly string[] = []

/** One key's addresses in both tiers. */
interface Target {
  readonly scope: string
  readonly key: string
  readonly local: string
  readonly localTags: readonly string[]
  readonly valueKey: string
  /** [key counter, ...tag counters] */
  readonly versionKeys: readonly string[]
  readonly lockKey: string
  readonly options: CachedOptions
}

interface InvalidationMessage {
  t: 'inv'
  id: string
  from: string
  ack: string
  s: string
  k: readonly string[]
  g: readonly string[]
}

interface FillMessage {
  t: 'fill'
  s: string
  k: string
}

const MAX_FENCED_RELOADS = 5
const MAX_ELECTIONS = 20

/**
 * L1 (lru-cache, decoded values) in front of Redis (serialized entries), with one loader per key across
 * the fleet: concurrent misses in a process share one load; across processes a Redis lock elects one
 * loader and the others wait for its fill message (pub/sub, not polling), bounded by the lock's TTL.
 * Loads are fenced: a value computed from data that an invalidation has since replaced is never
 * cached (a Redis compare-and-set on the invalidation counters) and never returned to a caller who
 * asked after the invalidation resolved (the load runs again).
 */
export class LayeredCache {
  readonly #config: CacheConfig
  readonly #telemetry: CacheTelemetry
  readonly #logger: Logger | undefined
  readonly #keys: CacheKeys
  readonly #l1: L1Store
  readonly #fence = new LocalFence()
  readonly #redis: RedisTier | undefined
  readonly #inflight = new Map<string, Promise<Outcome>>()
  readonly #fillWaiters = new Map<string, Set<() => void>>()
  readonly #acks = new Map<string, { count: number; expected: number; done: () => void }>()
  /** Invalidations Redis could not take: replayed when it is back. */
  readonly #deferred: Array<{ scope: string; keys: readonly string[]; tags: readonly string[] }> = []
  /** The addresses of each (scope, key) and (scope, tag), built once. */
  readonly #keyNames: ScopedMemo<KeyNames>
  readonly #tagNames: ScopedMemo<TagNames>
  #waiting = 0
  #closed = false

  constructor(config: CacheConfig, telemetry: CacheTelemetry, logger: Logger | undefined) {
    this.#config = config
    this.#telemetry = telemetry
    this.#logger = logger
    const keys = new CacheKeys(config.prefix)
    this.#keys = keys
    this.#keyNames = new ScopedMemo((scope, key) => ({
      local: localKey(scope, key),
      valueKey: keys.value(scope, key),
      keyVersion: keys.keyVersion(scope, key),
      lockKey: keys.lock(scope, key),
    }))
    this.#tagNames = new ScopedMemo((scope, tag) => ({
      local: localTag(scope, tag),
      version: keys.tagVersion(scope, tag),
    }))
    this.#l1 = new L1Store(config.l1.maxEntries, config.l1.maxBytes)
    if (config.redis !== undefined) {
      this.#redis = new RedisTier(
        config.redis.url,
        config.redis.commandTimeoutMs,
        this.#keys,
        { threshold: config.breakerThreshold, resetMs: config.breakerResetMs },
        logger,
        {
          onMessage: (channel, message) => this.#onMessage(channel, message),
          onResubscribed: () => this.#onRedisBack(),
          onBreaker: (open) => this.#onBreaker(open),
        },
      )
    }
    telemetry.observeWaiters(() => this.#waiting)
  }

  /**
   * The value for a key: L1, then Redis, then the loader (once per key across the fleet). Not `async`:
   * an L1 hit returns a settled promise, and a Redis hit is the continuation of the read's promise
   * (decoded, frozen and put in L1 as the reply arrives), with no async layer forwarding it.
   */
  get<T>(
    scope: string,
    tenantId: string | undefined,
    options: CachedOptions,
    loader: () => Promise<T>,
  ): Promise<T> {
    const names = this.#keyNames.get(scope, options.key)
    const entry = this.#l1.get(names.local)
    // The clock only matters for an entry at hand (a Redis read does not need it, nor its timer).
    const now = entry === undefined ? 0 : coarseNow()
    if (entry !== undefined && now < entry.freshUntil) {
      if (this.#shouldRefreshEarly(entry, now)) this.#refresh(this.#target(scope, names, options), loader)
      this.#telemetry.hit(tenantId)
      return Promise.resolve(entry.value as T)
    }
    const span = this.#telemetry.start(tenantId)
    const target = this.#target(scope, names, options)
    const flight =
      (entry === undefined ? this.#readFirst(target, loader, span) : undefined) ??
      this.#telemetry.within(span, () => this.#slow(target, loader, entry, now))
    return flight.then(
      (outcome) => {
        this.#telemetry.done(span, outcome.result)
        return outcome.entry.value as T
      },
      (error: unknown) => {
        this.#telemetry.failed(span, error)
        throw error
      },
    )
  }

  /**
   * Nothing in L1 and no load of the key in flight here: one Redis read whose reply is decoded at once;
   * only when it is not a valid hit does the load go on (election, loader), in the span's context.
   * Tracked like any load, so concurrent callers of the key wait for this read instead of sending theirs.
   * Undefined when Redis is not in use (the slow path decides what to do then).
   */
  #readFirst(target: Target, loader: () => Promise<unknown>, span: Span): Promise<Outcome> | undefined {
    const redis = this.#redis
    const local = target.local
    if (redis === undefined || !redis.usable() || this.#inflight.has(local)) return undefined
    const settled = () => {
      if (this.#inflight.get(local) === flight) this.#inflight.delete(local)
    }
    const goOn = (read: Read | undefined) => {
      const load = this.#telemetry.within(span, () => this.#load(target, loader, undefined, false, { read }))
      load.then(settled, settled)
      return load
    }
    const flight: Promise<Outcome> = redis.read(target.valueKey, target.versionKeys).then(
      (read) => {
        const hit = this.#validHit(target, read)
        if (hit === undefined) return goOn(read)
        // In L1 now: callers from here on hit it, so the read need not be shared any longer.
        settled()
        return hit
      },
      () => goOn(undefined),
    )
    this.#inflight.set(local, flight)
    return flight
  }

  async #slow(
    target: Target,
    loader: () => Promise<unknown>,
    l1: CacheEntry | undefined,
    now: number,
  ): Promise<Outcome> {
    if (l1 !== undefined && now < l1.staleUntil) {
      // Stale-while-revalidate: this caller gets the stale value at once; one refresh runs behind it.
      this.#refresh(target, loader)
      return { entry: l1, result: 'stale' }
    }
    const pending = this.#inflight.get(target.local)
    if (pending !== undefined) {
      this.#waiting++
      try {
        const outcome = await pending
        return { entry: outcome.entry, result: 'coalesced' }
      } finally {
        this.#waiting--
      }
    }
    const usable = l1 !== undefined && now < l1.graceUntil ? l1 : undefined
    const flight = this.#track(target.local, this.#load(target, loader, usable, false))
    const soft = target.options.softTimeoutMs ?? this.#config.softTimeoutMs
    if (usable === undefined || soft <= 0) return flight
    // A stale value is at hand: a slow loader must not hold this caller longer than the soft timeout.
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => resolve({ entry: usable, result: 'stale' }), soft)
    })
    try {
      return await Promise.race([flight, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  #track(local: string, flight: Promise<Outcome>): Promise<Outcome> {
    this.#inflight.set(local, flight)
    const clear = () => {
      if (this.#inflight.get(local) === flight) this.#inflight.delete(local)
    }
    flight.then(clear, clear)
    return flight
  }

  /** Starts a background refresh unless one already runs for the key; its errors are only logged. */
  #refresh(target: Target, loader: () => Promise<unknown>): void {
    if (this.#closed || this.#inflight.has(target.local)) return
    const current = this.#l1.get(target.local)
    const flight = this.#track(target.local, this.#load(target, loader, current, true))
    flight.catch((error: unknown) => {
      this.#logger?.warn({ err: error, key: target.key }, 'keel cache: background refresh failed')
    })
  }

  #shouldRefreshEarly(entry: CacheEntry, now: number): boolean {
    const beta = this.#config.earlyRefreshBeta
    if (beta <= 0 || entry.loadMs <= 0) return false
    // -ln(U) exceeds 20 with probability e^-20 (about 2e-9): before that point no draw is needed.
    if (now < entry.freshUntil - entry.loadMs * beta * 20) return false
    // XFetch (Vattani et al. 2015): refresh early with a probability that rises as expiry nears and
    // with how long the value takes to compute: -loadMs * beta * ln(U), U uniform in (0, 1].
    return now - entry.loadMs * beta * Math.log(1 - Math.random()) >= entry.freshUntil
  }

  /**
   * Reads Redis, elects a loader, loads; repeats when an invalidation fenced the load out. `prior`: the
   * first read, already made (undefined inside: it failed).
   */
  async #load(
    target: Target,
    loader: () => Promise<unknown>,
    fallback: CacheEntry | undefined,
    force: boolean,
    prior?: { read: Read | undefined },
  ): Promise<Outcome> {
    for (let attempt = 0; ; attempt++) {
      const redis = this.#redis?.usable() ? this.#redis : undefined
      let read: Read | undefined
      if (attempt === 0 && prior !== undefined) {
        read = prior.read
      } else if (redis !== undefined) {
        read = await redis.read(target.valueKey, target.versionKeys).catch(() => undefined)
      }
      if (read !== undefined && !force) {
        const hit = this.#validHit(target, read)
        if (hit !== undefined) return hit
      }
      const usable = pickFallback(fallback, read?.entry, read?.versions)
      const outcome =
        read !== undefined && redis !== undefined
          ? await this.#elect(redis, target, loader, read, usable, force)
          : await this.#loadHere(target, loader, undefined, usable)
      if (outcome !== undefined) return outcome
      // Fenced: an invalidation landed while loading. Load again from the new data, within reason.
      if (attempt >= MAX_FENCED_RELOADS) {
        throw new Error(`keel cache: key ${JSON.stringify(target.key)} kept being invalidated while loading`)
      }
      force = false
    }
  }

  /** A Redis entry that is valid (its counters match) and not past staleUntil becomes an L1 entry. */
  #validHit(target: Target, read: Read): Outcome | undefined {
    const entry = read.entry
    const now = Date.now()
    if (entry === undefined || now >= entry.staleUntil || !sameVersions(entry.versions, read.versions))
      return undefined
    // Decoded just now for this read: nobody else holds it, so it is frozen in place, not copied. Only
    // the value reaches callers; the entry around it is keel's own.
    if (this.#config.l1.freeze) deepFreeze(entry.value)
    this.#l1.set(target.local, entry, read.bytes, target.localTags)
    return { entry, result: now < entry.freshUntil ? 'l2_hit' : 'stale' }
  }

  async #elect(
    redis: RedisTier,
    target: Target,
    loader: () => Promise<unknown>,
    read: Read,
    fallback: CacheEntry | undefined,
    force: boolean,
  ): Promise<Outcome | undefined> {
    let versions = read.versions
    for (let round = 0; round < MAX_ELECTIONS; round++) {
      const fill = this.#awaitFill(target.local)
      let token: string | undefined
      try {
        token = await redis.tryLock(target.lockKey, this.#config.lockTtlMs)
      } catch {
        fill.cancel()
        return this.#loadHere(target, loader, undefined, fallback)
      }
      if (token !== undefined) {
        fill.cancel()
        try {
          if (round > 0 || !force) {
            // Filled between our read and the lock?
            const again = await redis.read(target.valueKey, target.versionKeys).catch(() => undefined)
            if (again !== undefined) {
              const hit = this.#validHit(target, again)
              if (hit !== undefined && !force) return hit
              versions = again.versions
            }
          }
          return await this.#loadHere(target, loader, { redis, versions }, fallback)
        } finally {
          redis.unlock(target.lockKey, token)
        }
      }
      // Another process is loading. It may have filled before we started listening: look once.
      const again = await redis.read(target.valueKey, target.versionKeys).catch(() => undefined)
      const early = again === undefined ? undefined : this.#validHit(target, again)
      if (early !== undefined) {
        fill.cancel()
        return early
      }
      this.#waiting++
      try {
        await fill.wait(this.#config.lockTtlMs)
      } finally {
        this.#waiting--
      }
      const after = await redis.read(target.valueKey, target.versionKeys).catch(() => undefined)
      if (after === undefined) return this.#loadHere(target, loader, undefined, fallback)
      const hit = this.#validHit(target, after)
      if (hit !== undefined) return hit
      versions = after.versions
      // The loader died (lock expired) or its value was invalidated meanwhile: stand for election again.
    }
    return this.#loadHere(target, loader, undefined, fallback)
  }

  /**
   * Runs the loader here. With Redis, the write is a compare-and-set on the invalidation counters read
   * before the load; without it (or if Redis fails now), the local fence decides. Undefined = fenced.
   */
  async #loadHere(
    target: Target,
    loader: () => Promise<unknown>,
    shared: { redis: RedisTier; versions: readonly string[] } | undefined,
    fallback: CacheEntry | undefined,
  ): Promise<Outcome | undefined> {
    const epoch = this.#fence.epoch
    const started = performance.now()
    let value: unknown
    try {
      value = await loader()
    } catch (error) {
      this.#telemetry.loaderFailed()
      if (fallback !== undefined && Date.now() < fallback.graceUntil) {
        // Fail-safe: the loader (or the database behind it) failed; serve the last value within grace.
        this.#logger?.warn(
          { err: error, key: target.key },
          'keel cache: loader failed, serving a stale value',
        )
        return { entry: fallback, result: 'stale' }
      }
      throw error
    }
    const loadMs = performance.now() - started
    this.#telemetry.loaded(loadMs)
    const entry = this.#entry(target, value, loadMs, shared?.versions ?? [])
    let payload: Buffer | undefined
    if (shared !== undefined) {
      payload = encodeEntry(entry)
      const fill: FillMessage = { t: 'fill', s: target.scope, k: target.key }
      const written = await shared.redis
        .casWrite(
          target.valueKey,
          target.versionKeys,
          shared.versions,
          payload,
          entry.graceUntil - Date.now(),
          JSON.stringify(fill),
        )
        .catch(() => undefined)
      if (written === false) return undefined
    }
    if (this.#fence.changedSince(epoch, [target.local, ...target.localTags])) return undefined
    const stored = this.#config.l1.freeze ? { ...entry, value: deepFreeze(entry.value) } : entry
    this.#l1.set(target.local, stored, payload?.length ?? approximateSize(entry.value), target.localTags)
    return { entry: stored, result: 'miss' }
  }

  #entry(target: Target, value: unknown, loadMs: number, versions: readonly string[]): CacheEntry {
    const o = target.options
    const ttl = jittered(o.ttlMs ?? this.#config.ttlMs, this.#config.jitter)
    const now = Date.now()
    const freshUntil = now + ttl
    const staleUntil = freshUntil + (o.staleMs ?? this.#config.staleMs)
    const graceUntil = staleUntil + (o.graceMs ?? this.#config.graceMs)
    return { value, freshUntil, staleUntil, graceUntil, loadMs, versions }
  }

  #awaitFill(local: string): { wait(timeoutMs: number): Promise<void>; cancel(): void } {
    let resolve: () => void = () => undefined
    const done = new Promise<void>((r) => {
      resolve = r
    })
    let set = this.#fillWaiters.get(local)
    if (set === undefined) {
      set = new Set()
      this.#fillWaiters.set(local, set)
    }
    const waiters = set
    waiters.add(resolve)
    const cancel = () => {
      waiters.delete(resolve)
      if (waiters.size === 0 && this.#fillWaiters.get(local) === waiters) this.#fillWaiters.delete(local)
    }
    return {
      cancel,
      wait: async (timeoutMs) => {
        await settleWithin(done, timeoutMs)
        cancel()
      },
    }
  }

  /**
   * Drops keys and every key carrying the tags, here and in every process, and makes sure no load that
   * began before it can cache or return the old value. Resolves once the other processes confirmed
   * (or after invalidationAckTimeoutMs). Without Redis it is remembered and sent when Redis is back.
   */
  async invalidate(scope: string, keys: readonly string[], tags: readonly string[]): Promise<void> {
    this.#applyLocally(scope, keys, tags)
    const redis = this.#redis
    if (redis === undefined) return
    if (!redis.usable()) {
      this.#defer(scope, keys, tags)
      return
    }
    const id = randomUUID()
    const ackChannel = this.#keys.ackChannel(redis.processId)
    const message: InvalidationMessage = {
      t: 'inv',
      id,
      from: redis.processId,
      ack: ackChannel,
      s: scope,
      k: keys,
      g: tags,
    }
    const acked = this.#expectAcks(id)
    let receivers: number
    try {
      receivers = await redis.invalidate(
        keys.map((k) => this.#keys.keyVersion(scope, k)),
        keys.map((k) => this.#keys.value(scope, k)),
        tags.map((t) => this.#keys.tagVersion(scope, t)),
        JSON.stringify(message),
      )
    } catch (error) {
      acked.cancel()
      this.#logger?.warn({ err: error }, 'keel cache: invalidation deferred until Redis is back')
      this.#defer(scope, keys, tags)
      return
    }
    // Every subscriber, this process included, acknowledges after dropping its copies.
    await acked.wait(receivers, this.#config.invalidationAckTimeoutMs)
  }

  #applyLocally(scope: string, keys: readonly string[], tags: readonly string[]): void {
    for (const key of keys) {
      const local = localKey(scope, key)
      this.#l1.delete(local)
      this.#fence.bump(local)
    }
    for (const tag of tags) {
      const local = localTag(scope, tag)
      this.#l1.deleteTag(local)
      this.#fence.bump(local)
    }
  }

  #defer(scope: string, keys: readonly string[], tags: readonly string[]): void {
    if (this.#deferred.length < 10_000) this.#deferred.push({ scope, keys, tags })
    else this.#logger?.error({ scope }, 'keel cache: too many deferred invalidations; dropping')
  }

  #expectAcks(id: string): { wait(expected: number, timeoutMs: number): Promise<void>; cancel(): void } {
    let finish: () => void = () => undefined
    const done = new Promise<void>((r) => {
      finish = r
    })
    const record = { count: 0, expected: Number.POSITIVE_INFINITY, done: () => finish() }
    this.#acks.set(id, record)
    const cancel = () => this.#acks.delete(id)
    return {
      cancel,
      wait: async (expected, timeoutMs) => {
        record.expected = expected
        if (record.count >= expected) record.done()
        await settleWithin(done, timeoutMs)
        cancel()
      },
    }
  }

  #onMessage(channel: string, raw: string): void {
    const redis = this.#redis
    if (redis === undefined) return
    if (channel !== this.#keys.events) {
      const record = this.#acks.get(raw)
      if (record !== undefined && ++record.count >= record.expected) record.done()
      return
    }
    let message: InvalidationMessage | FillMessage
    try {
      message = JSON.parse(raw) as InvalidationMessage | FillMessage
    } catch {
      return
    }
    if (message.t === 'fill') {
      const waiters = this.#fillWaiters.get(localKey(message.s, message.k))
      if (waiters !== undefined) for (const wake of [...waiters]) wake()
      return
    }
    if (message.t === 'inv') {
      if (message.from !== redis.processId) this.#applyLocally(message.s, message.k, message.g)
      redis.publish(message.ack, message.id)
    }
  }

  /** The subscription came back after a loss: invalidations may have been missed, so L1 starts over. */
  #onRedisBack(): void {
    this.#l1.clear()
    this.#fence.bumpAll()
    this.#logger?.info({ signal: 'cache_redis_restored' }, 'keel cache: Redis is back; L1 cleared')
    const pending = this.#deferred.splice(0)
    for (const { scope, keys, tags } of pending) {
      this.invalidate(scope, keys, tags).catch(() => undefined)
    }
  }

  #onBreaker(open: boolean): void {
    this.#telemetry.breaker(open)
    if (open) {
      this.#logger?.warn(
        { signal: 'cache_redis_down' },
        'keel cache: Redis unavailable, serving from L1 and loaders',
      )
    } else {
      // Commands work again; the subscriber may not have noticed an outage, so treat it as one.
      this.#onRedisBack()
    }
  }

  #target(scope: string, names: KeyNames, options: CachedOptions): Target {
    const tags = options.tags
    let localTags = NO_TAGS
    let versionKeys: string[]
    if (tags === undefined || tags.length === 0) {
      versionKeys = [names.keyVersion]
    } else {
      const locals: string[] = new Array(tags.length)
      versionKeys = new Array(tags.length + 1)
      versionKeys[0] = names.keyVersion
      for (let i = 0; i < tags.length; i++) {
        const tag = this.#tagNames.get(scope, tags[i]!)
        locals[i] = tag.local
        versionKeys[i + 1] = tag.version
      }
      localTags = locals
    }
    return {
      scope,
      key: options.key,
      local: names.local,
      localTags,
      valueKey: names.valueKey,
      versionKeys,
      lockKey: names.lockKey,
      options,
    }
  }

  get redisAvailable(): boolean {
    return this.#redis !== undefined && !this.#redis.breakerOpen
  }

  /** For health: the breaker is closed and Redis answers a PING now. */
  async redisHealthy(): Promise<boolean> {
    return this.redisAvailable && (await this.#redis!.ping())
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#redis?.close()
  }
}

let cachedNow = 0

/**
 * Date.now(), read at most once per millisecond: an L1 hit checks freshness on every call, and the
 * clock read would otherwise be a fifth of its cost. Same approach as lru-cache's ttlResolution; the
 * reading is refreshed by a timer, so within one uninterrupted run of microtasks it does not advance.
 */
function coarseNow(): number {
  if (cachedNow === 0) {
    cachedNow = Date.now()
    setTimeout(() => {
      cachedNow = 0
    }, 1).unref()
  }
  return cachedNow
}

/** Resolves when `done` does or after `timeoutMs`, whichever comes first. */
async function settleWithin(done: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))])
  } finally {
    clearTimeout(timer)
  }
}

function sameVersions(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** The best value to fall back on if the loader fails: the one still within its grace period. */
function pickFallback(
  local: CacheEntry | undefined,
  remote: CacheEntry | undefined,
  versions: readonly string[] | undefined,
): CacheEntry | undefined {
  const now = Date.now()
  // An invalidated remote entry is not a fallback: the caller asked for data after that invalidation.
  const remoteOk = remote !== undefined && versions !== undefined && sameVersions(remote.versions, versions)
  if (remoteOk && now < remote.graceUntil) return remote
  return local !== undefined && now < local.graceUntil ? local : undefined
}

function jittered(ttlMs: number, jitter: number): number {
  if (jitter <= 0) return ttlMs
  return Math.max(1, Math.round(ttlMs * (1 - jitter + Math.random() * 2 * jitter)))
}

/** Bytes a value holds, roughly, when it was never serialized (L1-only). */
function approximateSize(value: unknown): number {
  try {
    return encodedSize(value)
  } catch {
    return 1_024
  }
}
