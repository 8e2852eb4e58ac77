import type { CacheResult } from '../telemetry/cache-telemetry.js'

/** What a read or a load ends with: the value to serve and how it was found (the span's result). */
export interface CacheOutcome {
  readonly value: unknown
  readonly result: CacheResult
}
