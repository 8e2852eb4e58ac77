import type { ResolvedConfig } from '../config/config-schema.js'
import { type CacheEntry, deepFreeze, sameVersions } from './cache-entry.js'
import { localKey, localTag } from './cache-keys.js'
import type { CacheOutcome } from './cache-outcome.js'
import type { CacheTarget } from './cache-targets.js'
import { L1Store } from './l1-store.js'
import { LocalFence } from './local-fence.js'
import { encodedSize } from './serializer.js'
import type { Read } from './shared-tier.js'

/**
 * This process's side of the cache: L1 and the fence that keeps a load from caching a value an
 * invalidation replaced meanwhile. Everything that puts an entry into L1 or drops one goes through
 * here, so the rules (what is valid, what is frozen, what a fence blocks) are in one place.
 */
export class LocalTier {
  readonly #l1: L1Store
  readonly #fence = new LocalFence()
  readonly #freeze: boolean
  /** Whether an entry may enter L1 now (RedisTier.l1Safe; always, without Redis). */
  #mayKeep: () => boolean = () => true

  constructor(config: ResolvedConfig['cache']['l1']) {
    this.#l1 = new L1Store(config.maxEntries, config.maxBytes)
    this.#freeze = config.freeze
  }

  /** Set once the shared tier exists (it is built after this): L1 keeps entries only when it allows. */
  keepOnlyWhen(mayKeep: () => boolean): void {
    this.#mayKeep = mayKeep
  }

  /** L1's lookup, handed to the read path as is: an L1 hit goes through no layer of this class. */
  get l1(): Pick<L1Store, 'get'> {
    return this.#l1
  }

  /** Where a load starts: `keep` refuses its value if the key or a tag was invalidated since. */
  get epoch(): number {
    return this.#fence.epoch
  }

  /**
   * A Redis entry that is valid (its counters match) and not past staleUntil becomes an L1 entry. Its
   * value was frozen as it was decoded (when `l1.freeze`); only the value reaches callers, the entry
   * around it is keel's own.
   */
  promote(target: CacheTarget, read: Read): CacheOutcome | undefined {
    const entry = read.entry
    if (entry === undefined) return undefined
    const now = Date.now()
    if (now >= entry.staleUntil || !sameVersions(entry.versions, read.versions)) return undefined
    if (this.#mayKeep()) this.#l1.set(target.local, entry, read.bytes, target.localTags)
    return { value: entry.value, result: now < entry.freshUntil ? 'l2_hit' : 'stale' }
  }

  /**
   * A loaded entry, unless an invalidation of its key or a tag was applied here since `epoch` (then
   * undefined: fenced). `bytes`: its serialized size when it went to Redis.
   */
  keep(
    target: CacheTarget,
    entry: CacheEntry,
    bytes: number | undefined,
    epoch: number,
  ): CacheOutcome | undefined {
    if (this.#fence.changedSince(epoch, [target.local, ...target.localTags])) return undefined
    const stored = this.#freeze ? { ...entry, value: deepFreeze(entry.value) } : entry
    if (this.#mayKeep()) {
      this.#l1.set(target.local, stored, bytes ?? approximateSize(entry.value), target.localTags)
    }
    return { value: stored.value, result: 'miss' }
  }

  /** Drops keys and every key carrying the tags, and fences the loads of them in flight. */
  drop(scope: string, keys: readonly string[], tags: readonly string[]): void {
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

  /** Invalidations may have been missed (Redis was away): L1 starts over, every load in flight is fenced. */
  forgetAll(): void {
    this.#l1.clear()
    this.#fence.bumpAll()
  }
}

/** Bytes a value holds, roughly, when it was never serialized (L1-only). */
function approximateSize(value: unknown): number {
  try {
    return encodedSize(value)
  } catch {
    return 1_024
  }
}
