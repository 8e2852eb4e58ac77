import { DataSource } from 'typeorm'
import type { QueryResultCache } from 'typeorm/cache/QueryResultCache.js'
import type { QueryResultCacheOptions } from 'typeorm/cache/QueryResultCacheOptions.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { InvoiceEntity, PaymentEntity } from '../src/orms/typeorm.js'
import { ormKeel } from '../src/support/keel.js'
import { createOrmTables } from '../src/support/schema.js'

/**
 * TypeORM's result cache, in memory: the keys TypeORM hands its redis and ioredis providers (the cache
 * `id`, else the SQL text and parameters), without the server.
 */
class MemoryCache implements QueryResultCache {
  readonly entries = new Map<string, QueryResultCacheOptions>()
  async connect() {}
  async disconnect() {}
  async synchronize() {}
  async getFromCache(options: QueryResultCacheOptions) {
    return this.entries.get(options.identifier ?? options.query!)
  }
  async storeInCache(options: QueryResultCacheOptions) {
    this.entries.set(options.identifier ?? options.query!, options)
  }
  isExpired(saved: QueryResultCacheOptions) {
    return saved.time! + saved.duration < Date.now()
  }
  async clear() {
    this.entries.clear()
  }
  async remove(ids: string[]) {
    for (const id of ids) this.entries.delete(id)
  }
}

// One global DataSource on keel.pgPool() with TypeORM's result cache on: the cache sits above keel,
// keyed by SQL text, so it is one more place where the ORM merges callers (ADR 0031 addendum).
describe('TypeORM result cache on keel.pgPool()', () => {
  const keel = ormKeel()
  const cache = new MemoryCache()
  let dataSource: DataSource
  const as = <T>(tenant: string, fn: () => Promise<T>) => keel.run(keel.tenant(tenant), fn)
  const numbers = (rows: Array<{ number: string }>) => rows.map((r) => r.number)

  beforeAll(async () => {
    await createOrmTables()
    const pool = keel.pgPool()
    dataSource = new DataSource({
      type: 'postgres',
      driver: {
        Pool: function KeelPool() {
          return pool
        },
      },
      entities: [InvoiceEntity, PaymentEntity],
      installExtensions: false,
      cache: { provider: () => cache },
    })
    await as('acme', () => dataSource.initialize())
  })
  afterAll(() => keel.close())

  it('cache: true serves one tenant’s cached rows to another (keyed by SQL, not tenant)', async () => {
    const listAll = () =>
      dataSource
        .getRepository(InvoiceEntity)
        .find({ select: { number: true }, order: { id: 'ASC' }, cache: 60_000 })
    expect(numbers(await as('acme', listAll))).toEqual(['acme-1', 'acme-2', 'acme-3'])
    // globex never reads acme's rows from Postgres (RLS): TypeORM hands them over from its cache.
    expect(numbers(await as('globex', listAll))).toEqual(['acme-1', 'acme-2', 'acme-3'])
    // The same query uncached: globex's own rows.
    const uncached = await as('globex', () =>
      dataSource.getRepository(InvoiceEntity).find({ select: { number: true }, order: { id: 'ASC' } }),
    )
    expect(numbers(uncached)).toEqual(['globex-1', 'globex-2', 'globex-3'])
  })

  it('a cache id with the tenant in it keeps each tenant’s results its own', async () => {
    const listOwn = () =>
      dataSource.getRepository(InvoiceEntity).find({
        select: { number: true },
        order: { id: 'ASC' },
        cache: { id: `${keel.current().tenantId}:invoices`, milliseconds: 60_000 },
      })
    expect(numbers(await as('acme', listOwn))).toEqual(['acme-1', 'acme-2', 'acme-3'])
    expect(numbers(await as('globex', listOwn))).toEqual(['globex-1', 'globex-2', 'globex-3'])
    // Served from the cache the second time, still per tenant.
    expect(numbers(await as('globex', listOwn))).toEqual(['globex-1', 'globex-2', 'globex-3'])
    expect(cache.entries.has('globex:invoices')).toBe(true)
  })
})
