import type { CacheEntry } from './cache-entry.js'

/**
 * XFetch (Vattani et al. 2015): whether an L1 hit should start a background refresh before the entry
 * expires, with a probability that rises as expiry nears and with how long the value takes to compute:
 * refresh when now - loadMs * beta * ln(U) >= freshUntil, U uniform in (0, 1].
 */
export function shouldRefreshEarly(entry: CacheEntry, now: number, beta: number): boolean {
  if (beta <= 0 || entry.loadMs <= 0) return false
  // -ln(U) exceeds 20 with probability e^-20 (about 2e-9): before that point no draw is needed.
  if (now < entry.freshUntil - entry.loadMs * beta * 20) return false
  return now - entry.loadMs * beta * Math.log(1 - Math.random()) >= entry.freshUntil
}
