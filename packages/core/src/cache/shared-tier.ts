import type { CacheEntry } from './cache-entry.js'

/** One read of a key in the shared tier. */
export interface Read {
  /** The decoded entry, if present and readable. */
  readonly entry: CacheEntry | undefined
  /** Current [key, ...tags] invalidation counters. */
  readonly versions: string[]
  /** Serialized size of the entry (0 when absent). */
  readonly bytes: number
}

/**
 * What the cache asks of the shared tier (RedisTier implements it). Each part of the cache is handed
 * only the methods it uses (a Pick of this), so what touches Redis, and how, reads off its constructor.
 * Every method either succeeds or fails quickly; a failure means "Redis unavailable", never an error
 * for the caller.
 */
export interface SharedTier {
  /** This process's identity on the bus (its acknowledgement channel, its own messages). */
  readonly processId: string
  readonly breakerOpen: boolean
  /** True when commands should be tried at all (the breaker is closed, or lets a probe through). */
  usable(): boolean
  /** The entry and its counters in one MGET: `keys` is [value, key counter, ...tag counters]. */
  read(keys: readonly string[]): Promise<Read>
  /**
   * The same read, with what comes next run in the reply's own reaction (no promise in between): the
   * Redis-hit path, where each promise hop is a share of the cost (ADR 0027).
   */
  readThen<R>(
    keys: readonly string[],
    then: (read: Read) => R | PromiseLike<R>,
    otherwise: (error: unknown) => R | PromiseLike<R>,
  ): Promise<R>
  /** A token when this process now holds the key's loader lock, else undefined. */
  tryLock(lockKey: string, ttlMs: number): Promise<string | undefined>
  unlock(lockKey: string, token: string): void
  /** Writes if the counters still hold `expected`, and publishes the fill; false when fenced out. */
  casWrite(
    valueKey: string,
    versionKeys: readonly string[],
    expected: readonly string[],
    payload: Buffer,
    ttlMs: number,
    fillMessage: string,
  ): Promise<boolean>
  /**
   * Bumps the counters, drops the values, and broadcasts; resolves to the number of receivers
   * (counting them may take up to `countWithinMs`; Infinity when some could not be counted in time).
   */
  invalidate(
    keyVersions: readonly string[],
    valueKeys: readonly string[],
    tagVersions: readonly string[],
    message: string,
    countWithinMs: number,
  ): Promise<number>
  publish(channel: string, message: string): void
  /** For health: Redis answers a PING now. */
  ping(): Promise<boolean>
  close(): Promise<void>
}
