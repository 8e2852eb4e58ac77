import { settleWithin } from './settle-within.js'

/** The acknowledgements one invalidation is waiting for. */
export interface AckWait {
  /** Resolves once `expected` acknowledgements arrived, or after `timeoutMs`. */
  wait(expected: number, timeoutMs: number): Promise<void>
  cancel(): void
}

/**
 * Counts the acknowledgements of this process's invalidations, by id. Counting starts before the
 * invalidation is published (a fast receiver may answer before Redis tells us how many there are).
 */
export class InvalidationAcks {
  readonly #pending = new Map<string, { count: number; expected: number; done: () => void }>()

  expect(id: string): AckWait {
    let finish: () => void = () => undefined
    const done = new Promise<void>((r) => {
      finish = r
    })
    const record = { count: 0, expected: Number.POSITIVE_INFINITY, done: () => finish() }
    this.#pending.set(id, record)
    const cancel = () => this.#pending.delete(id)
    return {
      cancel,
      wait: async (expected, timeoutMs) => {
        record.expected = expected
        if (record.count >= expected) record.done()
        await settleWithin(done, timeoutMs)
        cancel()
      },
    }
  }

  /** An acknowledgement arrived on this process's ack channel. */
  received(id: string): void {
    const record = this.#pending.get(id)
    if (record !== undefined && ++record.count >= record.expected) record.done()
  }
}
