import type { CacheEntry } from './cache-entry.js'
import type { CacheOutcome } from './cache-outcome.js'
import type { CacheTarget } from './cache-targets.js'
import type { CachedOptions } from './cached-options.js'
import type { FillWaiters } from './fill-waiters.js'
import type { LoaderRunner } from './loader-runner.js'
import type { LocalTier } from './local-tier.js'
import type { Read, SharedTier } from './shared-tier.js'
import type { WaitCount } from './wait-count.js'

const MAX_ELECTIONS = 20

export type LockTier = Pick<SharedTier, 'read' | 'tryLock' | 'unlock' | 'casWrite'>

/**
 * One loader per key across the fleet: a Redis lock (SET NX PX lockTtlMs) elects it; the others wait
 * for its fill message (pub/sub, not polling), bounded by the lock's TTL, then read the value it
 * wrote. A loader that died (its lock expired) or whose value was invalidated meanwhile leads to a new
 * election. When Redis fails along the way the caller loads by itself: the cache never fails a call
 * because Redis did.
 */
export class LoaderElection {
  readonly #tier: LockTier
  readonly #local: Pick<LocalTier, 'promote'>
  readonly #fills: Pick<FillWaiters, 'listen'>
  readonly #runner: Pick<LoaderRunner, 'run'>
  readonly #waiting: Pick<WaitCount, 'during'>
  readonly #lockTtlMs: number

  constructor(
    tier: LockTier,
    local: Pick<LocalTier, 'promote'>,
    fills: Pick<FillWaiters, 'listen'>,
    runner: Pick<LoaderRunner, 'run'>,
    waiting: Pick<WaitCount, 'during'>,
    lockTtlMs: number,
  ) {
    this.#tier = tier
    this.#local = local
    this.#fills = fills
    this.#runner = runner
    this.#waiting = waiting
    this.#lockTtlMs = lockTtlMs
  }

  /**
   * The key's value after an election: loaded here when this process won, else the winner's. `read`:
   * the read that missed; `force`: load even if Redis has a valid value (a refresh). Undefined: fenced.
   */
  async elect(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    read: Read,
    fallback: CacheEntry | undefined,
    force: boolean,
  ): Promise<CacheOutcome | undefined> {
    const tier = this.#tier
    const runHere = (versions: readonly string[] | undefined) =>
      this.#runner.run(
        target,
        options,
        loader,
        versions === undefined ? undefined : { tier, versions },
        fallback,
      )
    let versions = read.versions
    for (let round = 0; round < MAX_ELECTIONS; round++) {
      const fill = this.#fills.listen(target.local)
      let token: string | undefined
      try {
        token = await tier.tryLock(target.lockKey, this.#lockTtlMs)
      } catch {
        fill.cancel()
        return runHere(undefined)
      }
      if (token !== undefined) {
        fill.cancel()
        try {
          if (round > 0 || !force) {
            // Filled between our read and the lock?
            const again = await this.#read(target)
            if (again !== undefined) {
              const hit = this.#local.promote(target, again)
              if (hit !== undefined && !force) return hit
              versions = again.versions
            }
          }
          return await runHere(versions)
        } finally {
          tier.unlock(target.lockKey, token)
        }
      }
      // Another process is loading. It may have filled before we started listening: look once.
      const again = await this.#read(target)
      const early = again === undefined ? undefined : this.#local.promote(target, again)
      if (early !== undefined) {
        fill.cancel()
        return early
      }
      await this.#waiting.during(fill.wait(this.#lockTtlMs))
      const after = await this.#read(target)
      if (after === undefined) return runHere(undefined)
      const hit = this.#local.promote(target, after)
      if (hit !== undefined) return hit
      versions = after.versions
      // The loader died (lock expired) or its value was invalidated meanwhile: stand for election again.
    }
    return runHere(undefined)
  }

  #read(target: CacheTarget): Promise<Read | undefined> {
    return this.#tier.read(target.readKeys).catch(() => undefined)
  }
}
