/**
 * Redis key layout. Every key of one scope (a tenant, or the shared scope) carries the same hash tag,
 * `{prefix:scope}`, so a value, its version keys and its lock live in one Redis Cluster slot and one
 * MGET or script touches them all. The tenant id is part of every key: one tenant can never read
 * another's value for the same key. A scope never contains `}` (tenantScope escapes it), so the hash tag
 * is exactly the scope and everything after `}:` is the kind and the caller's key: distinct (scope, key)
 * pairs never build the same Redis key.
 *
 *   <prefix>:{<scope>}:v:<key>     the value (entry), with a TTL
 *   <prefix>:{<scope>}:kv:<key>    the key's invalidation counter (no TTL)
 *   <prefix>:{<scope>}:tag:<tag>   a tag's invalidation counter (no TTL)
 *   <prefix>:{<scope>}:lock:<key>  the loader lock, with a TTL
 *   <prefix>:events                invalidations and fills, for every process
 */
export class CacheKeys {
  readonly events: string
  readonly #prefix: string

  constructor(prefix: string) {
    this.#prefix = prefix
    this.events = `${prefix}:events`
  }

  ackChannel(processId: string): string {
    return `${this.#prefix}:ack:${processId}`
  }

  value(scope: string, key: string): string {
    return `${this.#prefix}:{${scope}}:v:${key}`
  }

  keyVersion(scope: string, key: string): string {
    return `${this.#prefix}:{${scope}}:kv:${key}`
  }

  tagVersion(scope: string, tag: string): string {
    return `${this.#prefix}:{${scope}}:tag:${tag}`
  }

  lock(scope: string, key: string): string {
    return `${this.#prefix}:{${scope}}:lock:${key}`
  }
}

/** The in-process identity of a key: scope and key joined by a separator no key can forge. */
export function localKey(scope: string, key: string): string {
  return `${scope}\u0000${key}`
}

export function localTag(scope: string, tag: string): string {
  return `${scope}\u0000${tag}`
}

const MEMO_LIMIT = 10_000

/**
 * Values derived from (scope, name), memoized in a Map of Maps: building them on every call would cost
 * more than an L1 hit (new strings to flatten and hash each time). Each level is bounded by clearing.
 */
export class ScopedMemo<V> {
  readonly #byScope = new Map<string, Map<string, V>>()
  readonly #build: (scope: string, name: string) => V

  constructor(build: (scope: string, name: string) => V) {
    this.#build = build
  }

  get(scope: string, name: string): V {
    let byName = this.#byScope.get(scope)
    if (byName === undefined) {
      if (this.#byScope.size >= MEMO_LIMIT) this.#byScope.clear()
      byName = new Map()
      this.#byScope.set(scope, byName)
    }
    let value = byName.get(name)
    if (value === undefined) {
      if (byName.size >= MEMO_LIMIT) byName.clear()
      value = this.#build(scope, name)
      byName.set(name, value)
    }
    return value
  }
}
