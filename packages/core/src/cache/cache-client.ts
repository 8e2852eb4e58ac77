import {
  type CachedOptions,
  checkCachedOptions,
  checkInvalidateOptions,
  type InvalidateOptions,
} from './cached-options.js'
import type { LayeredCache } from './layered-cache.js'

/** What a caller sees of the cache: bound to one scope (a tenant, or shared by all tenants). */
export interface CacheApi {
  /**
   * The cached value for `options.key`, else the loader's (run once per key across every process).
   * Values come back deep-frozen from both tiers, with their types (Date, BigInt, Map, Set, Buffer).
   */
  cached<T>(options: CachedOptions, loader: () => Promise<T>): Promise<T>
  /** Drops keys, and every key carrying one of the tags, in every process. */
  invalidate(options: InvalidateOptions): Promise<void>
}

export class CacheClient implements CacheApi {
  readonly #cache: LayeredCache
  readonly #scope: string
  readonly #tenantId: string | undefined
  readonly #assertOpen: () => void

  constructor(cache: LayeredCache, scope: string, tenantId: string | undefined, assertOpen: () => void) {
    this.#cache = cache
    this.#scope = scope
    this.#tenantId = tenantId
    this.#assertOpen = assertOpen
  }

  cached<T>(options: CachedOptions, loader: () => Promise<T>): Promise<T> {
    try {
      this.#assertOpen()
      return this.#cache.get(this.#scope, this.#tenantId, checkCachedOptions(options, loader), loader)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  async invalidate(options: InvalidateOptions): Promise<void> {
    this.#assertOpen()
    const { keys, tags } = checkInvalidateOptions(options)
    await this.#cache.invalidate(this.#scope, keys, tags)
  }
}

/**
 * The scope of a tenant's keys: part of every key, so tenants can never share an entry. The scope sits
 * between `{` and `}` in Redis keys, so a `}` of a custom idPattern would end it early and let one
 * tenant's id plus key spell another's (`a}:v:x` + `y` = `a` + `x}:v:y`): `%` and `}` are
 * percent-escaped, which keeps the scope free of `}` and the mapping one-to-one (ADR 0026). Ids of the
 * default pattern contain neither, so their keys did not change.
 */
export function tenantScope(tenantId: string): string {
  return `t:${tenantId.replace(/[%}]/g, (c) => (c === '%' ? '%25' : '%7D'))}`
}

export const SHARED_SCOPE = 'g'
