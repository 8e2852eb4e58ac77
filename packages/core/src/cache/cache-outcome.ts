import type { CacheResult } from '../telemetry/cache-telemetry.js'
import type { CacheEntry } from './cache-entry.js'

/** What a read or a load ends with: the entry to serve and how it was found (the span's result). */
export interface CacheOutcome {
  readonly entry: CacheEntry
  readonly result: CacheResult
}
