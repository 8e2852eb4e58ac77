import { KeelError } from '../errors.js'
import { watchAbort } from './abort-watch.js'

interface Waiter {
  resolve(): void
  reject(error: Error): void
  /** Clears the timer and the abort listener: a shared signal must not collect listeners. */
  cleanup(): void
  settled: boolean
  /** performance.now() when it started waiting. */
  readonly since: number
}

interface Slot {
  active: number
  waiters: Waiter[]
}

/**
 * Caps how many connections one tenant holds at once, so a tenant's burst of heavy reports waits in
 * its own line instead of filling the pool every other tenant shares. Waits are bounded; past the
 * bound the caller gets KEEL_TENANT_BUSY (an adapter turns that into 503 + Retry-After).
 */
export class TenantLimiter {
  readonly #slots = new Map<string, Slot>()
  readonly #onThrottled: (tenantId: string, limit: number) => void

  constructor(onThrottled: (tenantId: string, limit: number) => void) {
    this.#onThrottled = onThrottled
  }

  /** True when a permit was taken at once; otherwise a promise for one. */
  acquire(tenantId: string, limit: number, timeoutMs: number, signal?: AbortSignal): true | Promise<void> {
    let slot = this.#slots.get(tenantId)
    if (slot === undefined) {
      slot = { active: 0, waiters: [] }
      this.#slots.set(tenantId, slot)
    }
    if (slot.active < limit) {
      slot.active++
      return true
    }
    return this.#wait(tenantId, slot, limit, timeoutMs, signal)
  }

  /**
   * Gives a permit back: to the tenant's next waiter when there is one (returns when that call started
   * waiting, so a governed pool can weigh it against other databases' waiters), else to the pool.
   */
  release(tenantId: string): number | undefined {
    const slot = this.#slots.get(tenantId)
    if (slot === undefined) return undefined
    while (slot.waiters.length > 0) {
      const next = slot.waiters.shift()!
      if (next.settled) continue
      // The permit passes straight to the next waiter: `active` stays the same.
      next.settled = true
      next.cleanup()
      next.resolve()
      return next.since
    }
    slot.active--
    if (slot.active === 0) this.#slots.delete(tenantId)
    return undefined
  }

  /** Whether the tenant could take a permit now without waiting. */
  hasRoom(tenantId: string, limit: number): boolean {
    return (this.#slots.get(tenantId)?.active ?? 0) < limit
  }

  /** Fails every call still waiting for a permit (keel.close() ran out of time). */
  rejectAll(error: Error): void {
    for (const slot of this.#slots.values()) {
      for (const waiter of [...slot.waiters]) {
        if (waiter.settled) continue
        waiter.settled = true
        waiter.cleanup()
        waiter.reject(error)
      }
      slot.waiters = []
    }
  }

  /** Connections held and calls waiting, per tenant (for health output and tests). */
  snapshot(): Record<string, { active: number; waiting: number }> {
    const out: Record<string, { active: number; waiting: number }> = {}
    for (const [id, slot] of this.#slots) {
      out[id] = { active: slot.active, waiting: slot.waiters.filter((w) => !w.settled).length }
    }
    return out
  }

  #wait(tenantId: string, slot: Slot, limit: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      let unwatch: (() => void) | undefined
      const waiter: Waiter = {
        resolve,
        reject,
        settled: false,
        since: performance.now(),
        cleanup: () => {
          clearTimeout(timer)
          unwatch?.()
        },
      }
      const fail = (error: Error) => {
        if (waiter.settled) return
        waiter.settled = true
        waiter.cleanup()
        const index = slot.waiters.indexOf(waiter)
        if (index >= 0) slot.waiters.splice(index, 1)
        reject(error)
      }
      timer = setTimeout(() => {
        this.#onThrottled(tenantId, limit)
        fail(
          new KeelError(
            'KEEL_TENANT_BUSY',
            `tenant ${JSON.stringify(tenantId)} holds all ${limit} of its connections and none freed up within ${timeoutMs} ms`,
            { details: { tenantId, limit, waitedMs: timeoutMs, retryAfterMs: Math.max(1_000, timeoutMs) } },
          ),
        )
      }, timeoutMs)
      if (signal !== undefined) unwatch = watchAbort(signal, () => fail(abortError(signal)))
      slot.waiters.push(waiter)
    })
  }
}

export function abortError(signal: AbortSignal): KeelError {
  return new KeelError('KEEL_ABORTED', 'the operation was aborted', { cause: signal.reason })
}
