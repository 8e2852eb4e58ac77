import { LRUCache } from 'lru-cache'

const REMEMBERED = 100_000

/**
 * Fences loads against invalidations applied in this process: a load that started before an
 * invalidation of its key or one of its tags must not put its (old) value in the cache. Each
 * invalidation bumps an epoch and remembers, per key or tag, the epoch it happened at.
 */
export class LocalFence {
  #epoch = 0
  readonly #at = new LRUCache<string, number>({ max: REMEMBERED })

  get epoch(): number {
    return this.#epoch
  }

  bump(name: string): void {
    this.#at.set(name, ++this.#epoch)
  }

  /** Everything was invalidated (Redis came back after an outage): every load in flight is fenced. */
  bumpAll(): void {
    this.#epoch += REMEMBERED + 1
  }

  changedSince(epoch: number, names: readonly string[]): boolean {
    // More invalidations than remembered since then: assume ours was among them.
    if (this.#epoch - epoch > REMEMBERED) return true
    for (const name of names) if ((this.#at.get(name) ?? 0) > epoch) return true
    return false
  }
}
