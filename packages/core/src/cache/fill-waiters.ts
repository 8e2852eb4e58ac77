import { settleWithin } from './settle-within.js'

/** A caller waiting for another process's loader to fill a key. */
export interface FillWait {
  /** Resolves on the key's fill message or after `timeoutMs`, then stops listening. */
  wait(timeoutMs: number): Promise<void>
  /** Stops listening without waiting. */
  cancel(): void
}

/**
 * The callers of this process waiting for a key's fill message, by the key's L1 identity. A wait is
 * registered before the caller looks for the value one last time, so a fill landing in between is
 * not missed.
 */
export class FillWaiters {
  readonly #waiters = new Map<string, Set<() => void>>()

  listen(local: string): FillWait {
    let resolve: () => void = () => undefined
    const done = new Promise<void>((r) => {
      resolve = r
    })
    let set = this.#waiters.get(local)
    if (set === undefined) {
      set = new Set()
      this.#waiters.set(local, set)
    }
    const waiters = set
    waiters.add(resolve)
    const cancel = () => {
      waiters.delete(resolve)
      if (waiters.size === 0 && this.#waiters.get(local) === waiters) this.#waiters.delete(local)
    }
    return {
      cancel,
      wait: async (timeoutMs) => {
        await settleWithin(done, timeoutMs)
        cancel()
      },
    }
  }

  /** The key was filled: every caller waiting for it looks again. */
  wake(local: string): void {
    const waiters = this.#waiters.get(local)
    if (waiters !== undefined) for (const wake of [...waiters]) wake()
  }
}
