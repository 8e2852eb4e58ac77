import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { CacheTelemetry } from '../telemetry/cache-telemetry.js'
import { fillMessage } from './bus-message.js'
import type { CacheEntry } from './cache-entry.js'
import type { CacheOutcome } from './cache-outcome.js'
import type { CacheTarget } from './cache-targets.js'
import type { CachedOptions } from './cached-options.js'
import type { LocalTier } from './local-tier.js'
import { encodeEntry } from './serializer.js'
import type { SharedTier } from './shared-tier.js'

type Durations = Pick<ResolvedConfig['cache'], 'ttlMs' | 'staleMs' | 'graceMs' | 'jitter'>

/** The shared tier a load writes to, and the counters its load started from. */
export interface SharedWrite {
  readonly tier: Pick<SharedTier, 'casWrite'>
  readonly versions: readonly string[]
}

/**
 * Runs a loader in this process and keeps its value. With Redis, the write is a compare-and-set on the
 * invalidation counters read before the load, and it publishes the fill; without it (or if Redis fails
 * now), the local fence decides. Resolves to undefined when fenced: an invalidation landed meanwhile,
 * and the caller loads again. A failing loader is served the fallback within its grace (fail-safe).
 */
export class LoaderRunner {
  readonly #local: Pick<LocalTier, 'epoch' | 'keep'>
  readonly #durations: Durations
  readonly #telemetry: Pick<CacheTelemetry, 'loaded' | 'loaderFailed'>
  readonly #logger: Logger | undefined

  constructor(
    local: Pick<LocalTier, 'epoch' | 'keep'>,
    durations: Durations,
    telemetry: Pick<CacheTelemetry, 'loaded' | 'loaderFailed'>,
    logger: Logger | undefined,
  ) {
    this.#local = local
    this.#durations = durations
    this.#telemetry = telemetry
    this.#logger = logger
  }

  async run(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    shared: SharedWrite | undefined,
    fallback: CacheEntry | undefined,
  ): Promise<CacheOutcome | undefined> {
    const epoch = this.#local.epoch
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
        return { value: fallback.value, result: 'stale' }
      }
      throw error
    }
    const loadMs = performance.now() - started
    this.#telemetry.loaded(loadMs)
    const entry = this.#entry(options, value, loadMs, shared?.versions ?? [])
    let payload: Buffer | undefined
    if (shared !== undefined) {
      payload = encodeEntry(entry)
      const written = await shared.tier
        .casWrite(
          target.valueKey,
          target.versionKeys,
          shared.versions,
          payload,
          entry.graceUntil - Date.now(),
          fillMessage(target.scope, target.key),
        )
        .catch(() => undefined)
      if (written === false) return undefined
    }
    return this.#local.keep(target, entry, payload?.length, epoch)
  }

  #entry(o: CachedOptions, value: unknown, loadMs: number, versions: readonly string[]): CacheEntry {
    const d = this.#durations
    const ttl = jittered(o.ttlMs ?? d.ttlMs, d.jitter)
    const now = Date.now()
    const freshUntil = now + ttl
    const staleUntil = freshUntil + (o.staleMs ?? d.staleMs)
    const graceUntil = staleUntil + (o.graceMs ?? d.graceMs)
    return { value, freshUntil, staleUntil, graceUntil, loadMs, versions }
  }
}

function jittered(ttlMs: number, jitter: number): number {
  if (jitter <= 0) return ttlMs
  return Math.max(1, Math.round(ttlMs * (1 - jitter + Math.random() * 2 * jitter)))
}
