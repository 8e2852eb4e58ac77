let cachedNow = 0

/**
 * Date.now(), read at most once per millisecond: an L1 hit checks freshness on every call, and the
 * clock read would otherwise be a fifth of its cost. Same approach as lru-cache's ttlResolution; the
 * reading is refreshed by a timer, so within one uninterrupted run of microtasks it does not advance.
 */
export function coarseNow(): number {
  if (cachedNow === 0) {
    cachedNow = Date.now()
    setTimeout(() => {
      cachedNow = 0
    }, 1).unref()
  }
  return cachedNow
}
