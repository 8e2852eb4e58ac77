import { type CacheEntry, pickFallback } from './cache-entry.js'
import type { CacheOutcome } from './cache-outcome.js'
import type { CacheTarget } from './cache-targets.js'
import type { CachedOptions } from './cached-options.js'
import type { LoaderElection } from './loader-election.js'
import type { LoaderRunner } from './loader-runner.js'
import type { LocalTier } from './local-tier.js'
import type { Read, SharedTier } from './shared-tier.js'

const MAX_FENCED_RELOADS = 5

/** With Redis: where a load reads first, and who elects the loader. */
export interface SharedLoad {
  readonly tier: Pick<SharedTier, 'usable' | 'read'>
  readonly election: Pick<LoaderElection, 'elect'>
}

/**
 * A load that never caches, nor returns to a caller who asked after an invalidation, a value computed
 * from the data the invalidation replaced: it reads Redis, elects a loader (or loads here without
 * Redis), and repeats when an invalidation fenced the load out, a bounded number of times.
 */
export class FencedLoad {
  readonly #shared: SharedLoad | undefined
  readonly #local: Pick<LocalTier, 'promote'>
  readonly #runner: Pick<LoaderRunner, 'run'>

  constructor(
    shared: SharedLoad | undefined,
    local: Pick<LocalTier, 'promote'>,
    runner: Pick<LoaderRunner, 'run'>,
  ) {
    this.#shared = shared
    this.#local = local
    this.#runner = runner
  }

  /**
   * `fallback`: served if the loader fails within grace; `force`: load even if Redis holds a valid
   * value (a refresh); `prior`: the first read, already made (its read undefined: it failed).
   */
  async load(
    target: CacheTarget,
    options: CachedOptions,
    loader: () => Promise<unknown>,
    fallback: CacheEntry | undefined,
    force: boolean,
    prior?: { read: Read | undefined },
  ): Promise<CacheOutcome> {
    for (let attempt = 0; ; attempt++) {
      const shared = this.#shared?.tier.usable() === true ? this.#shared : undefined
      let read: Read | undefined
      if (attempt === 0 && prior !== undefined) {
        read = prior.read
      } else if (shared !== undefined) {
        read = await shared.tier.read(target.readKeys).catch(() => undefined)
      }
      if (read !== undefined && !force) {
        const hit = this.#local.promote(target, read)
        if (hit !== undefined) return hit
      }
      const usable = pickFallback(fallback, read?.entry, read?.versions)
      const outcome =
        read !== undefined && shared !== undefined
          ? await shared.election.elect(target, options, loader, read, usable, force)
          : await this.#runner.run(target, options, loader, undefined, usable)
      if (outcome !== undefined) return outcome
      // Fenced: an invalidation landed while loading. Load again from the new data, within reason.
      if (attempt >= MAX_FENCED_RELOADS) {
        throw new Error(`keel cache: key ${JSON.stringify(target.key)} kept being invalidated while loading`)
      }
      force = false
    }
  }
}
