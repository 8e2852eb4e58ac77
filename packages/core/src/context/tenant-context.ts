import { AsyncLocalStorage } from 'node:async_hooks'
import { KeelError } from '../errors.js'

/**
 * Carries the request's tenant client through async code. Only ever read by application code via
 * keel.current(): the connection path gets the tenant passed explicitly, because pool callbacks run
 * in whichever request's context released the connection (TENANCY.md).
 */
export class TenantContext<T> {
  readonly #storage = new AsyncLocalStorage<T>()

  run<R>(value: T, fn: () => R): R {
    return this.#storage.run(value, fn)
  }

  current(): T {
    const value = this.#storage.getStore()
    if (value === undefined) {
      throw new KeelError('KEEL_NO_TENANT_CONTEXT', 'keel.current() was called outside keel.run(db, fn)')
    }
    return value
  }

  maybeCurrent(): T | undefined {
    return this.#storage.getStore()
  }
}
