import type { Keel } from '@keel/core'

export interface TenantClientsOptions<C> {
  /** Most clients kept; the least recently used one is dropped beyond it. */
  max?: number
  /** Called for a dropped client (and for every client by disposeAll). */
  dispose?: (client: C) => Promise<void> | void
}

/**
 * One ORM client per tenant, for an ORM that merges the work of concurrent callers into one statement
 * (Prisma's findUnique dataloader). The client is picked by `keel.current().tenantId` at each call, and
 * is built over `keel.pgPool()`, which follows keel.current(): every caller a client ever merges is of
 * one tenant, and each statement still runs in its request's session (its replica routing and its
 * read-your-writes token). A bounded LRU: the app-side pattern docs/orm.md shows, as the suite runs it.
 */
export class TenantClients<C> {
  readonly #keel: Keel
  readonly #create: () => C
  readonly #max: number
  readonly #dispose: ((client: C) => Promise<void> | void) | undefined
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  readonly #clients = new Map<string, C>()

  constructor(keel: Keel, create: () => C, options: TenantClientsOptions<C> = {}) {
    this.#keel = keel
    this.#create = create
    this.#max = options.max ?? 1000
    this.#dispose = options.dispose
  }

  /** The current tenant's client; KEEL_NO_TENANT_CONTEXT outside keel.run. Call it per use, never keep it. */
  get(): C {
    const { tenantId } = this.#keel.current()
    let client = this.#clients.get(tenantId)
    if (client === undefined) client = this.#create()
    else this.#clients.delete(tenantId)
    this.#clients.set(tenantId, client)
    if (this.#clients.size > this.#max) {
      const [oldest, dropped] = this.#clients.entries().next().value as [string, C]
      this.#clients.delete(oldest)
      void this.#dispose?.(dropped)
    }
    return client
  }

  /** How many clients are kept. */
  get size(): number {
    return this.#clients.size
  }

  async disposeAll(): Promise<void> {
    const clients = [...this.#clients.values()]
    this.#clients.clear()
    await Promise.all(clients.map((c) => this.#dispose?.(c)))
  }
}
