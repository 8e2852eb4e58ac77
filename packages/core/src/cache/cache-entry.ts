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
}

/**
 * Freezes a value and everything it holds, so callers sharing an L1 entry cannot change it under each
 * other. Built for speed on the L2-hit path: indexed loops for arrays, own enumerable string keys for
 * objects (symbol-keyed properties are left alone), primitives skipped before any call.
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) freezeObject(value)
  return value
}

function freezeObject(value: object): void {
  if (Object.isFrozen(value)) return
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === 'object' && item !== null) freezeObject(item)
    }
  } else if (ArrayBuffer.isView(value)) {
    // Typed arrays and Buffers cannot be frozen while they hold elements.
    return
  } else if (value instanceof Map) {
    for (const [k, v] of value) {
      if (typeof k === 'object' && k !== null) freezeObject(k)
      if (typeof v === 'object' && v !== null) freezeObject(v)
    }
  } else if (value instanceof Set) {
    for (const v of value) if (typeof v === 'object' && v !== null) freezeObject(v)
  } else {
    const record = value as Record<string, unknown>
    for (const key of Object.keys(record)) {
      const item = record[key]
      if (typeof item === 'object' && item !== null) freezeObject(item)
    }
  }
  // Map, Set and Date keep their internal state mutable even when frozen: documented as "do not mutate".
  Object.freeze(value)
}
