/** What both tiers store for a key. Times are epoch milliseconds. */
export interface CacheEntry<T = unknown> {
  readonly value: T
  /** Until then: fresh. */
  readonly freshUntil: number
  /** Until then: served stale while one caller refreshes. */
  readonly staleUntil: number
  /** Until then: served when the loader fails (fail-safe). Also the Redis TTL. */
  readonly graceUntil: number
  /** How long the loader took: XFetch refreshes slow-to-compute keys earlier. */
  readonly loadMs: number
  /** The key's and each tag's invalidation counter when the load started, in [key, ...tags] order. */
  readonly versions: readonly string[]
  readonly tags: readonly string[]
}

export function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value
  // Typed arrays and Buffers cannot be frozen while they hold elements; Map, Set and Date keep their
  // internal state mutable even when frozen. Those are documented as "do not mutate".
  if (ArrayBuffer.isView(value)) return value
  Object.freeze(value)
  if (value instanceof Map) {
    for (const [k, v] of value) {
      deepFreeze(k)
      deepFreeze(v)
    }
  } else if (value instanceof Set) {
    for (const v of value) deepFreeze(v)
  } else {
    for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key])
  }
  return value
}
