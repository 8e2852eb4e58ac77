// Pins the declarations the README shows, as an app sees them: '@keel/core' resolves to the built
// dist/*.d.ts through the package's exports (self-reference), not to src. ADR 0029.
import {
  createKeel,
  isKeelError,
  type Keel,
  type KeelConfig,
  type KeelError,
  type KeelErrorCode,
  type QueryResult,
  type TenantClient,
  type TenantPlacement,
  type TenantResolver,
  type Transaction,
} from '@keel/core'
import { describe, expectTypeOf, test } from 'vitest'
import { z } from 'zod'

declare const keel: Keel
declare const db: TenantClient

describe('createKeel config', () => {
  test('the README quick start config type-checks', () => {
    expectTypeOf(createKeel).parameter(0).toEqualTypeOf<KeelConfig>()
    expectTypeOf(createKeel).returns.toEqualTypeOf<Keel>()
    expectTypeOf({
      postgres: { primary: { connectionString: process.env.DATABASE_URL }, pool: { max: 20 } },
      tenancy: { mode: 'rls' as const, setting: 'app.tenant_id' },
    }).toExtend<KeelConfig>()
    expectTypeOf({
      postgres: { primary: { host: 'h' }, pool: { idleTimeoutMillis: 1, query_timeout: 5 } },
      limits: { tenantConnections: { share: 0.25 }, forTenant: () => ({ tenantConnections: { max: 10 } }) },
    }).toExtend<KeelConfig>()
  })

  test('the type refuses what the runtime refuses: database mode without resolve, unknown options', () => {
    // @ts-expect-error database mode needs tenancy.resolve
    createKeel({ postgres: {}, tenancy: { mode: 'database' } })
    // @ts-expect-error unknown option (strict objects)
    createKeel({ postgres: { primary: { host: 'h' }, pol: {} } })
    expectTypeOf<NonNullable<KeelConfig['tenancy']>['mode']>().toEqualTypeOf<'rls' | 'schema' | 'database'>()
  })

  test("the README's mixed placements config type-checks (database mode, no postgres.primary)", () => {
    const resolve: TenantResolver = async (id) =>
      id === 'megacorp'
        ? {
            primary: { connectionString: process.env.MEGACORP_URL },
            replicas: [{ connectionString: 'postgres://r/db' }],
          }
        : id === 'unknown'
          ? null
          : { primary: { connectionString: process.env.SHARED_URL }, isolation: 'rls' }
    expectTypeOf({
      tenancy: { mode: 'database' as const, resolve, maxConnections: 60 },
      postgres: { pool: { max: 5 } },
    }).toExtend<KeelConfig>()
    expectTypeOf<TenantPlacement['isolation']>().toEqualTypeOf<'database' | 'rls' | 'schema' | undefined>()
    expectTypeOf(keel.invalidateTenant).toBeCallableWith('acme')
  })
})

describe('tenants', () => {
  test('keel.tenant, keel.run, keel.current', () => {
    expectTypeOf(keel.tenant).toBeCallableWith('acme')
    expectTypeOf(keel.tenant).toBeCallableWith('acme', { consistencyToken: undefined })
    expectTypeOf(keel.tenant('acme')).toEqualTypeOf<TenantClient>()
    expectTypeOf(keel.run(db, () => 42)).toEqualTypeOf<number>()
    expectTypeOf(keel.run(db, async () => 'x')).toEqualTypeOf<Promise<string>>()
    expectTypeOf(keel.current()).toEqualTypeOf<TenantClient>()
    expectTypeOf(keel.maybeCurrent()).toEqualTypeOf<TenantClient | undefined>()
    expectTypeOf(db.tenantId).toEqualTypeOf<string>()
    expectTypeOf(db.consistencyToken).toEqualTypeOf<string | undefined>()
  })
})

describe('queries and transactions', () => {
  test('db.query<T> types the rows', async () => {
    const result = await db.query<{ id: number; number: string }>('SELECT id, number FROM invoices')
    expectTypeOf(result).toEqualTypeOf<QueryResult<{ id: number; number: string }>>()
    expectTypeOf(result.rows).toEqualTypeOf<Array<{ id: number; number: string }>>()
    expectTypeOf(result.rowCount).toEqualTypeOf<number | null>()
    expectTypeOf((await db.query('SELECT 1')).rows).toEqualTypeOf<Array<Record<string, unknown>>>()
  })

  test('db.transaction passes a Transaction and returns what the callback returns', async () => {
    const value = await db.transaction(async (tx) => {
      expectTypeOf(tx).toEqualTypeOf<Transaction>()
      const { rows } = await tx.query<{ n: number }>('SELECT 1 AS n')
      expectTypeOf(rows).toEqualTypeOf<Array<{ n: number }>>()
      expectTypeOf(await tx.transaction(async (sp) => sp.tenantId)).toEqualTypeOf<string>()
      expectTypeOf(tx.enqueue).toBeCallableWith('emails.invoice', { invoiceId: 1 })
      return rows[0]?.n
    })
    expectTypeOf(value).toEqualTypeOf<number | undefined>()
    expectTypeOf(db.transaction).toBeCallableWith(async () => 1, {
      isolationLevel: 'serializable',
      readOnly: true,
    })
  })
})

describe('cache', () => {
  test('cached returns the loader type, for db and keel.cache', async () => {
    const rows = await db.cached({ key: 'dashboard', ttlMs: 30_000, tags: ['invoices'] }, async () => [
      { n: 1 },
    ])
    expectTypeOf(rows).toEqualTypeOf<Array<{ n: number }>>()
    expectTypeOf(await keel.cache.cached({ key: 'plans' }, async () => 'p')).toEqualTypeOf<string>()
    expectTypeOf(db.invalidate).toBeCallableWith({ tags: ['invoices'] })
  })
})

describe('jobs', () => {
  test("defineJob's handler gets the schema's payload type; enqueue returns the job id", async () => {
    keel.defineJob('imports.csv', {
      schema: z.object({ fileId: z.string() }),
      retries: 3,
      handler: async (payload, { db: jobDb, signal }) => {
        expectTypeOf(payload).toEqualTypeOf<{ fileId: string }>()
        expectTypeOf(jobDb).toEqualTypeOf<TenantClient>()
        expectTypeOf(signal).toEqualTypeOf<AbortSignal>()
        return { imported: 1 }
      },
    })
    keel.defineJob('bad', {
      // @ts-expect-error the schema and the handler's payload must agree
      schema: z.object({ fileId: z.string() }),
      handler: async (payload: { other: number }) => payload,
    })
    expectTypeOf(await db.enqueue('imports.csv', { fileId: 'f' }, { idempotencyKey: 'k' })).toEqualTypeOf<{
      jobId: string
    }>()
  })
})

describe('errors', () => {
  test('KeelErrorCode is the current codes, subject first (ADR 0029)', () => {
    expectTypeOf<KeelErrorCode>().toEqualTypeOf<
      | 'KEEL_CONFIG_INVALID'
      | 'KEEL_TENANT_INVALID'
      | 'KEEL_TENANT_BUSY'
      | 'KEEL_TENANT_SCHEMA_UNKNOWN'
      | 'KEEL_TENANT_UNKNOWN'
      | 'KEEL_TENANT_RESOLVE_FAILED'
      | 'KEEL_RLS_BYPASS'
      | 'KEEL_QUERY_INVALID'
      | 'KEEL_PARSER_UNAVAILABLE'
      | 'KEEL_TRANSACTION_CLOSED'
      | 'KEEL_TRANSACTION_ABORTED'
      | 'KEEL_POOL_TIMEOUT'
      | 'KEEL_DB_UNAVAILABLE'
      | 'KEEL_CACHE_OPTIONS_INVALID'
      | 'KEEL_ABORTED'
      | 'KEEL_QUERY_TIMEOUT'
      | 'KEEL_NO_TENANT_CONTEXT'
      | 'KEEL_CLOSED'
      | 'KEEL_JOBS_UNAVAILABLE'
      | 'KEEL_JOBS_NOT_CONFIGURED'
      | 'KEEL_JOB_INVALID'
      | 'KEEL_JOB_TIMEOUT'
      | 'KEEL_JOB_UNKNOWN'
      | 'KEEL_JOB_PAYLOAD_INVALID'
      | 'KEEL_EXPORT_SINK_FAILED'
    >()
    expectTypeOf<KeelError['code']>().toEqualTypeOf<KeelErrorCode>()
  })

  test('isKeelError narrows', () => {
    const error: unknown = new Error('x')
    if (isKeelError(error, 'KEEL_TENANT_BUSY')) {
      expectTypeOf(error).toEqualTypeOf<KeelError>()
      expectTypeOf(error.details).toEqualTypeOf<Readonly<Record<string, unknown>>>()
    }
    // @ts-expect-error not a code
    isKeelError(error, 'KEEL_NOPE')
  })
})

describe('streaming reads and export', () => {
  test('db.stream is an async iterable of typed rows; db.export a Node Readable', () => {
    expectTypeOf(db.stream<{ id: string }>('SELECT id FROM t', [], { batchSize: 500 })).toEqualTypeOf<
      AsyncIterable<{ id: string }>
    >()
    expectTypeOf(db.export({ tables: ['t'], format: 'ndjson' })).toEqualTypeOf<
      import('node:stream').Readable
    >()
    // @ts-expect-error only 'ndjson' and 'csv'
    db.export({ tables: ['t'], format: 'xml' })
  })
})
