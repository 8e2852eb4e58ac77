import { KeelError } from '../errors.js'

export interface CachedOptions {
  /** The key, namespaced by tenant (db.cached) or shared (keel.cache). */
  key: string
  /** Fresh for this long. Defaults to cache.ttlMs. */
  ttlMs?: number
  /** Then served stale while one caller refreshes. Defaults to cache.staleMs. */
  staleMs?: number
  /** Then served if the loader fails. Defaults to cache.graceMs. */
  graceMs?: number
  /** With a stale value at hand, return it when the loader is slower than this. Defaults to cache.softTimeoutMs. */
  softTimeoutMs?: number
  /** Invalidate every key carrying a tag at once: `invalidate({ tags: ['invoices'] })`. */
  tags?: readonly string[]
}

export interface InvalidateOptions {
  keys?: readonly string[]
  tags?: readonly string[]
}

const MAX_NAME = 512
const MAX_TAGS = 32

function checkName(what: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_NAME) {
    throw new KeelError(
      'KEEL_CACHE_OPTIONS_INVALID',
      `${what} must be a string of 1 to ${MAX_NAME} characters`,
      {
        details: { field: what },
      },
    )
  }
  return value
}

function checkDuration(what: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
    throw new KeelError(
      'KEEL_CACHE_OPTIONS_INVALID',
      `${what} must be a non-negative number of milliseconds`,
      {
        details: { field: what },
      },
    )
  }
}

function checkNames(what: string, values: unknown): readonly string[] {
  if (values === undefined) return []
  if (!Array.isArray(values) || values.length > MAX_TAGS) {
    throw new KeelError(
      'KEEL_CACHE_OPTIONS_INVALID',
      `${what} must be an array of at most ${MAX_TAGS} strings`,
      {
        details: { field: what },
      },
    )
  }
  for (const v of values) checkName(`${what}[]`, v)
  return values as readonly string[]
}

/**
 * Hand-written checks rather than zod: they run on every cache hit, where a schema parse would cost
 * more than the hit itself.
 */
export function checkCachedOptions(options: unknown, loader: unknown): CachedOptions {
  if (options === null || typeof options !== 'object') {
    throw new KeelError('KEEL_CACHE_OPTIONS_INVALID', 'cached() needs an options object with a key', {
      details: { field: 'options' },
    })
  }
  const o = options as CachedOptions
  checkName('key', o.key)
  if (typeof loader !== 'function') {
    throw new KeelError('KEEL_CACHE_OPTIONS_INVALID', 'cached() needs a loader function', {
      details: { field: 'loader' },
    })
  }
  if (
    o.ttlMs !== undefined ||
    o.staleMs !== undefined ||
    o.graceMs !== undefined ||
    o.softTimeoutMs !== undefined
  ) {
    checkDuration('ttlMs', o.ttlMs)
    checkDuration('staleMs', o.staleMs)
    checkDuration('graceMs', o.graceMs)
    checkDuration('softTimeoutMs', o.softTimeoutMs)
    if (o.ttlMs === 0)
      throw new KeelError('KEEL_CACHE_OPTIONS_INVALID', 'ttlMs must be positive', {
        details: { field: 'ttlMs' },
      })
  }
  if (o.tags !== undefined) checkNames('tags', o.tags)
  return o
}

export function checkInvalidateOptions(options: unknown): {
  keys: readonly string[]
  tags: readonly string[]
} {
  if (options === null || typeof options !== 'object') {
    throw new KeelError('KEEL_CACHE_OPTIONS_INVALID', 'invalidate() needs { keys, tags }', {
      details: { field: 'options' },
    })
  }
  const o = options as InvalidateOptions
  const keys = checkNames('keys', o.keys)
  const tags = checkNames('tags', o.tags)
  if (keys.length === 0 && tags.length === 0) {
    throw new KeelError('KEEL_CACHE_OPTIONS_INVALID', 'invalidate() needs at least one key or tag', {
      details: { field: 'keys' },
    })
  }
  return { keys, tags }
}
