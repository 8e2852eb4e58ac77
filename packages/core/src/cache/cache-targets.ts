import type { CacheKeys } from './cache-keys.js'
import { localKey, localTag, ScopedMemo } from './cache-keys.js'

/** A key's addresses in both tiers (from (scope, key) alone), and what this process does with it now. */
export interface KeySlot {
  readonly scope: string
  readonly key: string
  /** The key's L1 identity. */
  readonly local: string
  readonly valueKey: string
  readonly keyVersion: string
  readonly lockKey: string
  /**
   * The value of the key's read or load in flight in this process: concurrent callers share it instead
   * of sending their own. A field here rather than a Map beside it: a Redis hit sets and clears it.
   */
  flight: Promise<unknown> | undefined
  /** The target last built for the key: a key is nearly always asked for with the same tags. */
  target: CacheTarget | undefined
}

/** One key with its tags: every address a read, a load or a fill of it needs. Built once, then reused. */
export interface CacheTarget {
  readonly slot: KeySlot
  readonly scope: string
  readonly key: string
  readonly local: string
  readonly valueKey: string
  readonly lockKey: string
  /** The tags it was built for (a copy: the caller's array may change). */
  readonly tags: readonly string[]
  /** The tags' L1 identities. */
  readonly localTags: readonly string[]
  /** [key counter, ...tag counters] */
  readonly versionKeys: readonly string[]
  /** [value, key counter, ...tag counters]: the one MGET of a read. */
  readonly readKeys: readonly string[]
}

/** A tag's addresses: its L1 tag-index entry and its Redis invalidation counter. */
interface TagNames {
  readonly local: string
  readonly version: string
}

const NO_TAGS: readonly string[] = []

/**
 * Builds and memoizes the addresses of keys and tags: building them on every call would cost more
 * than an L1 hit (new strings to flatten and hash), and on a Redis hit the arrays of a read. A slot
 * dropped by the memo's bound while its key is in flight only means a caller arriving then sends its
 * own read instead of sharing one.
 */
export class CacheTargets {
  readonly #keys: CacheKeys
  readonly #slots: ScopedMemo<KeySlot>
  readonly #tags: ScopedMemo<TagNames>

  constructor(keys: CacheKeys) {
    this.#keys = keys
    this.#slots = new ScopedMemo((scope, key) => ({
      scope,
      key,
      local: localKey(scope, key),
      valueKey: keys.value(scope, key),
      keyVersion: keys.keyVersion(scope, key),
      lockKey: keys.lock(scope, key),
      flight: undefined,
      target: undefined,
    }))
    this.#tags = new ScopedMemo((scope, tag) => ({
      local: localTag(scope, tag),
      version: keys.tagVersion(scope, tag),
    }))
  }

  /** The slots of (scope, key), handed to the read path as is: an L1 hit looks its key up there. */
  get slots(): Pick<ScopedMemo<KeySlot>, 'get'> {
    return this.#slots
  }

  /** The slot's target for these tags: the last one built when the tags are the same. */
  target(slot: KeySlot, tags: readonly string[] | undefined): CacheTarget {
    const last = slot.target
    if (last !== undefined && sameTags(last.tags, tags)) return last
    const built = this.#build(slot, tags === undefined || tags.length === 0 ? NO_TAGS : [...tags])
    slot.target = built
    return built
  }

  /** The Redis addresses an invalidation touches. */
  get keys(): CacheKeys {
    return this.#keys
  }

  #build(slot: KeySlot, tags: readonly string[]): CacheTarget {
    const localTags: string[] = new Array(tags.length)
    const versionKeys: string[] = new Array(tags.length + 1)
    versionKeys[0] = slot.keyVersion
    for (let i = 0; i < tags.length; i++) {
      const tag = this.#tags.get(slot.scope, tags[i]!)
      localTags[i] = tag.local
      versionKeys[i + 1] = tag.version
    }
    return {
      slot,
      scope: slot.scope,
      key: slot.key,
      local: slot.local,
      valueKey: slot.valueKey,
      lockKey: slot.lockKey,
      tags,
      localTags: tags.length === 0 ? NO_TAGS : localTags,
      versionKeys,
      readKeys: [slot.valueKey, ...versionKeys],
    }
  }
}

function sameTags(built: readonly string[], asked: readonly string[] | undefined): boolean {
  if (asked === undefined) return built.length === 0
  if (built.length !== asked.length) return false
  for (let i = 0; i < built.length; i++) if (built[i] !== asked[i]) return false
  return true
}
