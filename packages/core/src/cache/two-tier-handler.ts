import type { Span } from '@opentelemetry/api'
import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { CacheTelemetry } from '../telemetry/cache-telemetry.js'
import type { CacheEntry } from './cache-entry.js'
import type { ScopedMemo } from './cache-keys.js'
import type { CacheOutcome } from './cache-outcome.js'
import type { CacheTarget, CacheTargets, KeySlot } from './cache-targets.js'
import type { CachedOptions } from './cached-options.js'
import { coarseNow } from './coarse-now.js'
import type { FencedLoad } from './fenced-load.js'
import type { L1Store } from './l1-store.js'
import type { LocalTier } from './local-tier.js'
import type { Read, SharedTier } from './shared-tier.js'
import { shouldRefreshEarly } from './should-refresh-early.js'
import type { WaitCount } from './wait-count.js'

type Timing = Pick<ResolvedConfig['cache'], 'earlyRefreshBeta' | 'softTimeoutMs'>

/**
 * The read path of `cached()`: L1, then Redis, then a fenced load, with stale-while-revalidate, XFetch
 * early refresh, the soft timeout and one read or load per key in flight in this process (the others
 * share it). What a hit costs is decided here, so the hit paths allocate nothing they can avoid:
 * addresses come memoized from CacheTargets, and an L1 hit touches no clock more than once a
 * millisecond and starts no span unless the caller's span records (ADR 0027).
 */
export class TwoTierHandler {
  readonly #targets: Pick<CacheTargets, 'target'>
  /** The two lookups of an L1 hit, held directly (no layer between them and `get`). */
  readonly #slots: Pick<ScopedMemo<KeySlot>, 'get'>
  readonly #l1: Pick<L1Store, 'get'>
  readonly #local: Pick<LocalTier, 'promote'>
  readonly #tier: Pick<SharedTier, 'usable' | 'readThen'> | undefined
  readonly #loads: Pick<FencedLoad, 'load'>
  readonly #telemetry: CacheTelemetry
  readonly #logger: Logger | undefined
  readonly #timing: Timing
  readonly #waiting: Pick<WaitCount, 'during'>
  #closed = false

  constructor(
    targets: Pick<CacheTargets, 'slots' | 'target'>,
    local: Pick<LocalTier, 'l1' | 'promote'>,
    tier: Pick<SharedTier, 'usable' | 'readThen'> | undefined,
    loads: Pick<FencedLoad, 'load'>,
    telemetry: CacheTelemetry,
    logger: Logger | undefined,
    timing: Timing,
    waiting: Pick<WaitCount, 'during'>,
  ) {
    this.#targets = targets
    this.#slots = targets.slots
    this.#l1 = local.l1
    this.#local = local
    this.#tier = tier
    this.#loads = loads
    this.#telemetry = telemetry
    this.#logger = logger
    this.#timing = timing
    this.#waiting = waiting
  }

  /**
   * The value for a key: L1, then Redis, then the loader (once per key across the fleet). Not `async`:
   * an L1 hit returns a settled promise, and a Redis hit is the reply's own continuation (decoded,
   * frozen, put in L1 and reported as the reply arrives), with no promise forwarding it.
   */
  get<T>(
    scope: string,
    tenantId: string | undefined,
    options: CachedOptions,
    loader: () => Promise<T>,
  ): Promise<T> {
    const slot = this.#slots.get(scope, options.key)
    const entry = this.#l1.get(slot.local)
    // The clock only matters for an entry at hand (a Redis read does not need it, nor its timer).
    const now = entry === undefined ? 0 : coarseNow()
    if (entry !== undefined && now < entry.freshUntil) {
      if (shouldRefreshEarly(entry, now, this.#timing.earlyRefreshBeta)) {
        this.#refresh(this.#targets.target(slot, options.tags), options, loader)
      }
      this.#telemetry.hit(tenantId)
      return Promise.resolve(entry.value as T)
    }
    const span = this.#telemetry.start(tenantId)
    const target = this.#targets.target(slot, options.tags)
    const first = entry === undefined ? this.#readFirst(target, options, loader, span) : undefined
    if (first !== undefined) return first as Promise<T>
    return this.#served(
      span,
      this.#telemetry.within(span, () => this.#slow(target, options, loader, entry, now)),
    ) as Promise<T>
  }

  /** No more background refreshes (the cache is closing). */
  close(): void {
    this.#closed = true
  }

  /** The outcome's value, once its result ended the span. */
  #served(span: Span, outcome: Promise<CacheOutcome>): Promise<unknown> {
    return outcome.then(
      (o) => {
        this.#telemetry.done(span, o.result)
        return o.value
      },
      (error: unknown) => {
        this.#telemetry.failed(span, error)
        throw error
      },
    )
  }

  /**
   * Nothing in L1 and no load of the key in flight here: one Redis read whose reply is decoded, put in
   * L1 and reported in its own reaction; only when it is not a valid hit does the load go on (election,
   * loader), in the span's context. Shared like any load, so concurrent callers of the key wait for
   * this read instead of sending theirs. Undefined when Redis is not in use (the slow path decides).
   */
  #readFirst(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    span: Span,
  ): Promise<unknown> | undefined {
    const tier = this.#tier
    const slot = target.slot
    if (tier === undefined || !tier.usable() || slot.flight !== undefined) return undefined
    const flight: Promise<unknown> = tier.readThen(
      target.readKeys,
      (read) => {
        let hit: CacheOutcome | undefined
        try {
          hit = this.#local.promote(target, read)
        } catch (error) {
          // Never leave the key marked in flight: every later caller would wait on this failure.
          if (slot.flight === flight) slot.flight = undefined
          this.#telemetry.failed(span, error)
          throw error
        }
        if (hit === undefined) return this.#goOn(target, options, loader, span, flight, read)
        // In L1 now: callers from here on hit it, so the read need not be shared any longer.
        if (slot.flight === flight) slot.flight = undefined
        this.#telemetry.done(span, hit.result)
        return hit.value
      },
      () => this.#goOn(target, options, loader, span, flight, undefined),
    )
    slot.flight = flight
    return flight
  }

  /** The first read was no hit: the load goes on from it, still shared under the read's flight. */
  #goOn(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    span: Span,
    flight: Promise<unknown>,
    read: Read | undefined,
  ): Promise<unknown> {
    const load = this.#telemetry.within(span, () =>
      this.#loads.load(target, options, loader, undefined, false, { read }),
    )
    const slot = target.slot
    const settled = () => {
      if (slot.flight === flight) slot.flight = undefined
    }
    load.then(settled, settled)
    return this.#served(span, load)
  }

  async #slow(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    l1: CacheEntry | undefined,
    now: number,
  ): Promise<CacheOutcome> {
    if (l1 !== undefined && now < l1.staleUntil) {
      // Stale-while-revalidate: this caller gets the stale value at once; one refresh runs behind it.
      this.#refresh(target, options, loader)
      return { value: l1.value, result: 'stale' }
    }
    const pending = target.slot.flight
    if (pending !== undefined) {
      return { value: await this.#waiting.during(pending), result: 'coalesced' }
    }
    const usable = l1 !== undefined && now < l1.graceUntil ? l1 : undefined
    const flight = this.#track(target, this.#loads.load(target, options, loader, usable, false))
    const soft = options.softTimeoutMs ?? this.#timing.softTimeoutMs
    if (usable === undefined || soft <= 0) return flight
    // A stale value is at hand: a slow loader must not hold this caller longer than the soft timeout.
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<CacheOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ value: usable.value, result: 'stale' }), soft)
    })
    try {
      return await Promise.race([flight, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Shares a load's value under its key until it settles. */
  #track(target: CacheTarget, flight: Promise<CacheOutcome>): Promise<CacheOutcome> {
    const slot: KeySlot = target.slot
    const shared = flight.then(servedValue)
    slot.flight = shared
    const clear = () => {
      if (slot.flight === shared) slot.flight = undefined
    }
    shared.then(clear, clear)
    return flight
  }

  /** Starts a background refresh unless a load already runs for the key; its errors are only logged. */
  #refresh(target: CacheTarget, options: CachedOptions, loader: () => Promise<unknown>): void {
    if (this.#closed || target.slot.flight !== undefined) return
    const current = this.#l1.get(target.local)
    const flight = this.#track(target, this.#loads.load(target, options, loader, current, true))
    flight.catch((error: unknown) => {
      this.#logger?.warn({ err: error, key: target.key }, 'keel cache: background refresh failed')
    })
  }
}

function servedValue(outcome: CacheOutcome): unknown {
  return outcome.value
}
