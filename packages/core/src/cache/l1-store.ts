import { LRUCache } from 'lru-cache'
import type { CacheEntry } from './cache-entry.js'

const MIN_SWEEP = 1_024

/**
 * The in-process tier: decoded values, so a hit costs a map lookup and no serialization. Bounded by
 * entries and by approximate bytes (the serialized size). A tag index lets an invalidation by tag drop
 * exactly the entries that carry it, so hits never check tags.
 */
export class L1Store {
  readonly #lru: LRUCache<string, CacheEntry>
  readonly #byTag = new Map<string, Set<string>>()
  readonly #tagsOf = new Map<string, readonly string[]>()
  /** Empty tag sets are swept when there are this many tags (then twice as many as remain). */
  #sweepAt = MIN_SWEEP

  constructor(maxEntries: number, maxBytes: number) {
    this.#lru = new LRUCache<string, CacheEntry>({
      max: maxEntries,
      maxSize: maxBytes,
      sizeCalculation: () => 1,
      dispose: (entry, key) => this.#unindex(key, entry),
    })
  }

  get(key: string): CacheEntry | undefined {
    return this.#lru.get(key)
  }

  set(key: string, entry: CacheEntry, bytes: number, tagKeys: readonly string[]): void {
    this.#lru.set(key, entry, { size: Math.max(1, bytes) })
    for (const tag of tagKeys) {
      let keys = this.#byTag.get(tag)
      if (keys === undefined) {
        if (this.#byTag.size >= this.#sweepAt) this.#sweep()
        keys = new Set()
        this.#byTag.set(tag, keys)
      }
      keys.add(key)
    }
    if (tagKeys.length > 0) this.#tagsOf.set(key, tagKeys)
  }

  delete(key: string): void {
    this.#lru.delete(key)
  }

  deleteTag(tag: string): void {
    const keys = this.#byTag.get(tag)
    if (keys === undefined) return
    this.#byTag.delete(tag)
    for (const key of keys) this.#lru.delete(key)
  }

  clear(): void {
    this.#lru.clear()
    this.#byTag.clear()
    this.#tagsOf.clear()
    this.#sweepAt = MIN_SWEEP
  }

  get size(): number {
    return this.#lru.size
  }

  #unindex(key: string, _entry: CacheEntry): void {
    const tags = this.#tagsOf.get(key)
    if (tags === undefined) return
    this.#tagsOf.delete(key)
    // A tag's set stays when it empties: the next entry of the tag (often the very next L2 hit, when L1
    // is full and each store evicts) reuses it instead of building a new one. Swept when they pile up.
    for (const tag of tags) this.#byTag.get(tag)?.delete(key)
  }

  #sweep(): void {
    for (const [tag, keys] of this.#byTag) if (keys.size === 0) this.#byTag.delete(tag)
    this.#sweepAt = Math.max(MIN_SWEEP, this.#byTag.size * 2)
  }
}
