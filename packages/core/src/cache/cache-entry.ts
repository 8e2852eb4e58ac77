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

/** Whether two lists of invalidation counters are the same (an entry is valid when they are). */
export function sameVersions(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * The best value to fall back on if the loader fails: the one still within its grace period. An
 * invalidated remote entry (its counters no longer current) is not one: the caller asked for data after
 * that invalidation.
 */
export function pickFallback(
  local: CacheEntry | undefined,
  remote: CacheEntry | undefined,
  versions: readonly string[] | undefined,
): CacheEntry | undefined {
  const now = Date.now()
  const remoteOk = remote !== undefined && versions !== undefined && sameVersions(remote.versions, versions)
  if (remoteOk && now < remote.graceUntil) return remote
  return local !== undefined && now < local.graceUntil ? local : undefined
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

/**
 * deepFreeze for what JSON.parse just returned: a tree of plain objects and arrays, none frozen yet, no
 * Map, Set, typed array or cycle. It skips those checks and walks objects with for-in, which allocates
 * no key array: about half deepFreeze's time on the Redis-hit path (ADR 0027). JSON.parse makes only own
 * properties; for-in would also visit enumerable properties of Object.prototype, which exist only if
 * something polluted it.
 */
export function freezeParsed<T>(value: T): T {
  if (typeof value === 'object' && value !== null) freezeParsedObject(value)
  return value
}

function freezeParsedObject(value: object): void {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === 'object' && item !== null) freezeParsedObject(item)
    }
  } else {
    const record = value as Record<string, unknown>
    for (const key in record) {
      const item = record[key]
      if (typeof item === 'object' && item !== null) freezeParsedObject(item)
    }
  }
  Object.freeze(value)
}
