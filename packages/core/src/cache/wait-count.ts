/** How many callers wait for a load in flight (here or in another process): the keel.cache.waiters gauge. */
export class WaitCount {
  #count = 0

  get count(): number {
    return this.#count
  }

  /** Counts the caller as waiting until `promise` settles. */
  async during<T>(promise: Promise<T>): Promise<T> {
    this.#count++
    try {
      return await promise
    } finally {
      this.#count--
    }
  }
}
