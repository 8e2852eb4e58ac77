import { LRUCache } from 'lru-cache'
import type { CacheEntry } from './cache-entry.js'

const MIN_SWEEP = 1_024
const NO_TAGS: readonly string[] = []

/** An L1 slot: the entry and the tags it was stored with (what a tag's invalidation checks). */
interface Stored {
  readonly entry: CacheEntry
  readonly tags: readonly string[]
  /** Its size for the byte budget: read by sizeCalculation, so a set passes no options object. */
  readonly size: number
}

/**
 * The in-process tier: decoded values, so a hit costs a map lookup and no serialization. Bounded by
 * entries and by approximate bytes (the serialized size). A tag index lets an invalidation by tag drop
 * exactly the entries that carry it, so hits never check tags.
 *
 * The index is kept lazily: an eviction does not touch it (no dispose callback, no key-to-tags map), so
 * the L1 write of a Redis hit, which evicts when L1 is full, costs an LRU set and a Set lookup per tag
 * (ADR 0027). A tag's set may therefore name keys since evicted, or stored again without the tag:
 * `deleteTag` drops only the keys whose current slot carries the tag. Dead names are swept once the
 * index has grown by as many names as it held live after the last sweep, so it stays within about
 * twice its live size.
 */
export class L1Store {
  readonly #lru: LRUCache<string, Stored>
  readonly #byTag = new Map<string, Set<string>>()
  /** Names in the tag sets, dead or alive; a sweep runs when it reaches #sweepAt. */
  #indexed = 0
  #sweepAt = MIN_SWEEP

  constructor(maxEntries: number, maxBytes: number) {
    this.#lru = new LRUCache<string, Stored>({
      max: maxEntries,
      maxSize: maxBytes,
      sizeCalculation: (stored) => stored.size,
    })
  }

  get(key: string): CacheEntry | undefined {
    return this.#lru.get(key)?.entry
  }

  set(key: string, entry: CacheEntry, bytes: number, tagKeys: readonly string[]): void {
    this.#lru.set(key, { entry, tags: tagKeys.length === 0 ? NO_TAGS : tagKeys, size: Math.max(1, bytes) })
    for (let i = 0; i < tagKeys.length; i++) {
      const tag = tagKeys[i]!
      let keys = this.#byTag.get(tag)
      if (keys === undefined) {
        keys = new Set()
        this.#byTag.set(tag, keys)
      }
      const before = keys.size
      keys.add(key)
      if (keys.size !== before && ++this.#indexed >= this.#sweepAt) this.#sweep()
    }
  }

  delete(key: string): void {
    this.#lru.delete(key)
  }

  deleteTag(tag: string): void {
    const keys = this.#byTag.get(tag)
    if (keys === undefined) return
    this.#byTag.delete(tag)
    this.#indexed -= keys.size
    for (const key of keys) {
      if (this.#lru.peek(key)?.tags.includes(tag) === true) this.#lru.delete(key)
    }
  }

  clear(): void {
    this.#lru.clear()
    this.#byTag.clear()
    this.#indexed = 0
    this.#sweepAt = MIN_SWEEP
  }

  get size(): number {
    return this.#lru.size
  }

  /** Names in the tag index, live or not yet swept: for tests of its bound. */
  get tagIndexSize(): number {
    return this.#indexed
  }

  /** Drops the names of entries gone or stored again without the tag, and the sets left empty. */
  #sweep(): void {
    let live = 0
    for (const [tag, keys] of this.#byTag) {
      for (const key of keys) {
        if (this.#lru.peek(key)?.tags.includes(tag) !== true) keys.delete(key)
      }
      if (keys.size === 0) this.#byTag.delete(tag)
      live += keys.size
    }
    this.#indexed = live
    this.#sweepAt = Math.max(MIN_SWEEP, live * 2)
  }
}
