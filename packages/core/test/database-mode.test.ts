import { randomBytes } from 'node:crypto'
import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { createKeel, isKeelError, type Keel, type KeelConfig } from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import {
  mulberry32,
  OPS_PER_ROUND,
  type PropertyWorld,
  runProperty,
  seed,
} from './support/isolation-property.js'
import { readStack, stackCtl } from './support/stack.js'
import {
  awaitDatabasesOnReplicas,
  createTenantDatabases,
  dropTenantDatabases,
  urlFor,
} from './support/tenant-databases.js'
import { waitFor } from './support/wait.js'

// Database per tenant (issue #13): 32 tenant databases on the stack's primary, a shared rls database
// (the stack's `keel`) beside them, one keel serving both, under a per-server connection budget.

const DATABASES = Array.from({ length: 32 }, (_, i) => `keel_dt_${i}`)
const TENANTS = DATABASES.map((_, i) => `dt${i}`)
const dbOf = (tenantId: string) => `keel_dt_${tenantId.slice(2)}`
const SHARED_TABLE = 'iso_mixed'

type DatabaseTenancy = Extract<KeelConfig['tenancy'], { mode: 'database' }>

function databaseKeel(
  resolve: DatabaseTenancy['resolve'],
  options: {
    maxConnections?: number
    poolMax?: number
    applicationName: string
    tenancy?: Partial<DatabaseTenancy>
    limits?: KeelConfig['limits']
    logger?: KeelConfig['logger']
  },
): Keel {
  return createKeel({
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    postgres: {
      pool: { max: options.poolMax ?? 4 },
      applicationName: options.applicationName,
    },
    tenancy: {
      mode: 'database',
      resolve,
      maxConnections: options.maxConnections ?? 50,
      ...options.tenancy,
    },
    limits: { acquireTimeoutMs: 30_000, ...options.limits },
  })
}

/** Each tenant `dtN` in its own database `keel_dt_N` on the stack's primary. */
const dedicated = (tenantId: string) =>
  TENANTS.includes(tenantId)
    ? { primary: { connectionString: urlFor(readStack().primary.url, dbOf(tenantId)) } }
    : null

/** Samples this application's connections on the primary every few ms; `stop()` returns the peak. */
function sampleConnections(applicationName: string): { stop(): Promise<number>; peak(): number } {
  let peak = 0
  let running = true
  const done = (async () => {
    const su = await connect('super')
    try {
      while (running) {
        const r = await su.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1',
          [`${applicationName}%`],
        )
        peak = Math.max(peak, r.rows[0]!.n)
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    } finally {
      await su.end()
    }
  })()
  return {
    peak: () => peak,
    stop: async () => {
      running = false
      await done
      return peak
    },
  }
}

beforeAll(async () => {
  await createTenantDatabases(DATABASES, ['items', SHARED_TABLE])
  await createRlsTable(SHARED_TABLE)
  const stack = readStack()
  for (const [i, name] of DATABASES.entries()) {
    const owner = new pg.Client({ connectionString: urlFor(stack.primary.ownerUrl, name) })
    await owner.connect()
    await owner.query(`INSERT INTO items (tenant_id, body) VALUES ($1, 'seed')`, [TENANTS[i]])
    await owner.end()
  }
  await awaitDatabasesOnReplicas(DATABASES)
}, 180_000)

afterAll(async () => {
  await dropTenantDatabases(DATABASES)
  await dropTable(SHARED_TABLE)
}, 120_000)

describe('database mode: a database per tenant under a connection budget', () => {
  it('32 tenant databases, maxConnections 6 (far below 32 x pool.max 4): the server never sees more than 6 of keel connections, every call is answered, each tenant reads only its database', async () => {
    const app = 'keel-dbm-cap'
    const keel = databaseKeel(dedicated, { maxConnections: 6, poolMax: 4, applicationName: app })
    const sampler = sampleConnections(app)
    try {
      const calls = TENANTS.flatMap((tenantId) =>
        Array.from({ length: 3 }, async () => {
          const db = keel.tenant(tenantId)
          const seen: Array<{ database: string; tenants: string[] }> = []
          for (let i = 0; i < 8; i++) {
            if (i % 4 === 0)
              await db.query(`INSERT INTO items (tenant_id, body) VALUES ($1, 'w')`, [tenantId])
            const r = await db.query<{ d: string; t: string[] }>(
              'SELECT current_database() AS d, array_agg(DISTINCT tenant_id) AS t FROM items',
            )
            seen.push({ database: r.rows[0]!.d, tenants: r.rows[0]!.t })
          }
          return { tenantId, seen }
        }),
      )
      const results = await Promise.allSettled(calls)
      const peak = await sampler.stop()
      const failed = results.filter((r) => r.status === 'rejected')
      expect(failed.map((f) => String((f as PromiseRejectedResult).reason))).toEqual([])
      for (const r of results) {
        const { tenantId, seen } = (
          r as PromiseFulfilledResult<{
            tenantId: string
            seen: Array<{ database: string; tenants: string[] }>
          }>
        ).value
        for (const s of seen) {
          expect(s.database).toBe(dbOf(tenantId))
          expect(s.tenants).toEqual([tenantId])
        }
      }
      console.log(
        `database mode cap: ${TENANTS.length} databases, ${results.length * 10} calls, peak ${peak} connections (cap 6)`,
      )
      // The sampler saw the load (it can see more than one connection) and never more than the cap.
      expect(peak).toBeGreaterThan(1)
      expect(peak).toBeLessThanOrEqual(6)
      const health = await keel.health()
      expect(health.status).toBe('up')
      expect(health.databases?.length).toBe(TENANTS.length)
      const [server] = health.servers ?? []
      expect(server).toMatchObject({ max: 6, waiting: 0 })
      expect(server!.used).toBeLessThanOrEqual(6)
    } finally {
      await sampler.stop()
      await keel.close()
    }
  }, 180_000)

  it('a tenant flooding its own database does not take the budget: another tenant is served while the flood runs', async () => {
    const keel = databaseKeel(dedicated, { maxConnections: 5, poolMax: 3, applicationName: 'keel-dbm-flood' })
    try {
      let floodDone = false
      const flood = Promise.all(
        Array.from({ length: 24 }, () => keel.tenant('dt1').query('SELECT pg_sleep(0.2)')),
      ).finally(() => {
        floodDone = true
      })
      // Let the flood take what it can: pool.max 3 of the budget's 5.
      await new Promise((resolve) => setTimeout(resolve, 100))
      const other = keel.tenant('dt2')
      for (let i = 0; i < 5; i++) {
        const r = await other.query<{ d: string }>('SELECT current_database() AS d')
        expect(r.rows[0]!.d).toBe('keel_dt_2')
      }
      // Served in the middle of the flood (24 sleeps of 200 ms on 3 connections take ~1.6 s), not after it.
      expect(floodDone).toBe(false)
      await flood
    } finally {
      await keel.close()
    }
  }, 60_000)

  it('the budget is waited for fairly and the wait is bounded: KEEL_POOL_TIMEOUT past acquireTimeoutMs, and the budget is whole again after', async () => {
    const warnings: Array<Record<string, unknown>> = []
    const keel = databaseKeel(dedicated, {
      maxConnections: 2,
      poolMax: 2,
      applicationName: 'keel-dbm-wait',
      limits: { acquireTimeoutMs: 300 },
      logger: {
        debug: () => undefined,
        info: () => undefined,
        warn: (obj) => warnings.push(obj as Record<string, unknown>),
        error: () => undefined,
      },
    })
    try {
      const holders = [keel.tenant('dt3'), keel.tenant('dt4')].map((db) =>
        db.transaction((tx) => tx.query('SELECT pg_sleep(1.5)')),
      )
      await new Promise((resolve) => setTimeout(resolve, 300))
      const waited = await keel
        .tenant('dt5')
        .query('SELECT 1')
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(isKeelError(waited, 'KEEL_POOL_TIMEOUT')).toBe(true)
      expect((waited as { details: Record<string, unknown> }).details).toMatchObject({ maxConnections: 2 })
      // The runbook's signal: logged with the server and its budget.
      expect(warnings).toContainEqual(
        expect.objectContaining({
          signal: 'connection_budget_exhausted',
          max: 2,
          server: expect.stringMatching(/:\d+$/),
        }),
      )
      await Promise.all(holders)
      const r = await keel.tenant('dt5').query<{ d: string }>('SELECT current_database() AS d')
      expect(r.rows[0]!.d).toBe('keel_dt_5')
      const budget = (await keel.health()).servers?.[0]
      expect(budget?.used).toBeLessThanOrEqual(2)
      expect(budget?.waiting).toBe(0)
    } finally {
      await keel.close()
    }
  }, 60_000)
})

describe('database mode: mixed placements in one keel', () => {
  const shared = ['s0', 's1', 's2', 's3']
  const own = ['dt10', 'dt11', 'dt12', 'dt13']
  const resolve = (tenantId: string) => {
    const stack = readStack()
    if (shared.includes(tenantId))
      return { primary: { connectionString: stack.primary.url }, isolation: 'rls' as const }
    return dedicated(tenantId)
  }
  const world: PropertyWorld = {
    table: SHARED_TABLE,
    tenants: [...shared, ...own],
    scopeViolation: (tenantId, seen) => {
      if (shared.includes(tenantId)) {
        if (seen.database !== 'keel') return `${tenantId} ran in database ${seen.database}`
        return seen.setting === tenantId ? undefined : `setting ${seen.setting} for ${tenantId}`
      }
      return seen.database === dbOf(tenantId) ? undefined : `${tenantId} ran in database ${seen.database}`
    },
    forgeryRefused: (tenantId) => shared.includes(tenantId),
    crossedRows: async () => {
      const stack = readStack()
      const found: unknown[] = []
      const su = await connect('super')
      try {
        const r = await su.query(
          `SELECT tenant_id, body FROM ${SHARED_TABLE} WHERE split_part(body, ':', 1) <> tenant_id`,
        )
        found.push(...r.rows)
      } finally {
        await su.end()
      }
      for (const tenantId of own) {
        const client = new pg.Client({ connectionString: urlFor(stack.primary.superUrl, dbOf(tenantId)) })
        await client.connect()
        try {
          // In its own database every row is the tenant's: a row stamped by another is a leak.
          const r = await client.query(
            `SELECT tenant_id, body FROM ${SHARED_TABLE} WHERE split_part(body, ':', 1) <> $1`,
            [tenantId],
          )
          found.push(...r.rows.map((row) => ({ database: dbOf(tenantId), ...row })))
        } finally {
          await client.end()
        }
      }
      return found
    },
  }

  it('isolation property across shared (rls) and dedicated tenants, with backends killed: no row of another tenant is seen or written', async () => {
    const keel = databaseKeel(resolve, {
      maxConnections: 8,
      poolMax: 3,
      applicationName: 'keel-iso-mixed',
      limits: { tenantConnections: 3, acquireTimeoutMs: 30_000 },
    })
    try {
      await runProperty(world, [keel], mulberry32(seed + 300), {
        ops: OPS_PER_ROUND / 2,
        label: 'database mode, mixed placements',
        killEveryMs: 25,
        application: 'keel-iso-mixed',
      })
    } finally {
      await keel.close()
    }
  }, 300_000)

  it("the property's check flags a dedicated tenant served from another tenant's database (the check can fail)", () => {
    expect(world.scopeViolation('dt10', { setting: null, database: 'keel_dt_11' })).toBe(
      'dt10 ran in database keel_dt_11',
    )
    expect(world.scopeViolation('s0', { setting: 's0', database: 'keel_dt_10' })).toBe(
      's0 ran in database keel_dt_10',
    )
  })
})

describe('database mode: replicas, resolution and moves', () => {
  it('read-your-writes through the delayed replica in a dedicated tenant database', async () => {
    const stack = readStack()
    const replica2 = stack.replicas.find((r) => r.name === 'replica2')!
    const resolve = (tenantId: string) =>
      tenantId === 'dt20'
        ? {
            primary: { connectionString: urlFor(stack.primary.url, 'keel_dt_20') },
            replicas: [{ name: 'lagged', connectionString: urlFor(replica2.url, 'keel_dt_20') }],
          }
        : null
    const keel = databaseKeel(resolve, { applicationName: 'keel-dbm-ryw', tenancy: { maxConnections: 20 } })
    try {
      const count = async (db: ReturnType<Keel['tenant']>, consistency?: 'strong') =>
        (
          await db.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM items WHERE body = 'ryw'",
            [],
            consistency === undefined ? undefined : { consistency },
          )
        ).rows[0]!.n
      // The monitor has polled (the replica is in rotation) before the run.
      for (let i = 0; i < 100 && (await keel.health()).replicas[0]?.inRotation !== true; i++) {
        await keel.tenant('dt20').query('SELECT 1')
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      let stale = 0
      let staleWithoutToken = 0
      for (let i = 1; i <= 10; i++) {
        const db = keel.tenant('dt20')
        const before = await count(db, 'strong')
        await db.query(`INSERT INTO items (tenant_id, body) VALUES ('dt20', 'ryw')`)
        if ((await count(db)) !== before + 1) stale++
        const resumed = keel.tenant('dt20', { consistencyToken: db.consistencyToken })
        if ((await count(resumed)) !== before + 1) stale++
        // A session without the token may read the lagged replica: the check can fail.
        if ((await count(keel.tenant('dt20'))) !== before + 1) staleWithoutToken++
      }
      expect(stale).toBe(0)
      expect(staleWithoutToken).toBeGreaterThan(0)
    } finally {
      await keel.close()
    }
  }, 120_000)

  it('resolve returns null: KEEL_TENANT_UNKNOWN and nothing is sent; throws: KEEL_TENANT_RESOLVE_FAILED with its cause, not cached; hangs: the same after resolveTimeoutMs; concurrent calls share one resolution', async () => {
    let calls = 0
    let throwing = true
    const keel = databaseKeel(
      async (tenantId) => {
        calls++
        if (tenantId === 'nobody') return null
        if (tenantId === 'broken') {
          if (throwing) throw new Error('directory database down')
          return dedicated('dt21')
        }
        if (tenantId === 'slow') return new Promise(() => undefined)
        if (tenantId === 'garbage')
          return { primary: { connectionString: 'postgres://u:s3cr3t@h/db' }, isolation: 'bogus' } as never
        await new Promise((resolve) => setTimeout(resolve, 50))
        return dedicated(tenantId)
      },
      { applicationName: 'keel-dbm-resolve', tenancy: { resolveTimeoutMs: 300 } },
    )
    try {
      const unknown = await keel
        .tenant('nobody')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(unknown, 'KEEL_TENANT_UNKNOWN')).toBe(true)
      const tx = await keel
        .tenant('nobody')
        .transaction((t) => t.query('SELECT 1'))
        .catch((e: unknown) => e)
      expect(isKeelError(tx, 'KEEL_TENANT_UNKNOWN')).toBe(true)
      // Nothing was sent: no database was ever opened.
      expect((await keel.health()).databases).toEqual([])

      const failed = await keel
        .tenant('broken')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(failed, 'KEEL_TENANT_RESOLVE_FAILED')).toBe(true)
      expect(((failed as Error).cause as Error).message).toBe('directory database down')
      throwing = false
      const r = await keel.tenant('broken').query<{ d: string }>('SELECT current_database() AS d')
      expect(r.rows[0]!.d).toBe('keel_dt_21')

      const hung = await keel
        .tenant('slow')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(hung, 'KEEL_TENANT_RESOLVE_FAILED')).toBe(true)
      expect((hung as Error).message).toContain('resolveTimeoutMs')

      const garbage = await keel
        .tenant('garbage')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(garbage, 'KEEL_TENANT_RESOLVE_FAILED')).toBe(true)
      expect((garbage as { details: { fields: string[] } }).details.fields).toContain('isolation')
      expect(JSON.stringify(garbage)).not.toContain('s3cr3t')
      expect((garbage as Error).message).not.toContain('s3cr3t')

      calls = 0
      const together = await Promise.all(
        Array.from({ length: 50 }, () =>
          keel.tenant('dt22').query<{ d: string }>('SELECT current_database() AS d'),
        ),
      )
      expect(together.every((x) => x.rows[0]!.d === 'keel_dt_22')).toBe(true)
      expect(calls).toBe(1)
    } finally {
      await keel.close()
    }
  }, 60_000)

  it('a tenant moved to another placement reads from the new one once invalidateTenant ran, in sessions already open too', async () => {
    let home = 'dt23'
    const keel = databaseKeel((tenantId) => (tenantId === 'mover' ? dedicated(home) : null), {
      applicationName: 'keel-dbm-move',
    })
    try {
      const db = keel.tenant('mover')
      const where = async () => (await db.query<{ d: string }>('SELECT current_database() AS d')).rows[0]!.d
      expect(await where()).toBe('keel_dt_23')
      home = 'dt24'
      // Cached until invalidated (resolveCacheTtlMs).
      expect(await where()).toBe('keel_dt_23')
      keel.invalidateTenant('mover')
      expect(await where()).toBe('keel_dt_24')
      await db.transaction(async (tx) => {
        const r = await tx.query<{ d: string }>('SELECT current_database() AS d')
        expect(r.rows[0]!.d).toBe('keel_dt_24')
      })
      expect(() => keel.invalidateTenant("bad'id")).toThrow(
        expect.objectContaining({ code: 'KEEL_TENANT_INVALID' }),
      )
    } finally {
      await keel.close()
    }
  }, 60_000)

  it('an rls placement whose URL names a superuser is refused (KEEL_RLS_BYPASS), as in rls mode; a dedicated one is not scoped at all', async () => {
    const stack = readStack()
    const keel = databaseKeel(
      (tenantId) =>
        tenantId === 'admin-shared'
          ? { primary: { connectionString: stack.primary.superUrl }, isolation: 'rls' }
          : dedicated(tenantId),
      { applicationName: 'keel-dbm-bypass' },
    )
    try {
      const refused = await keel
        .tenant('admin-shared')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(refused, 'KEEL_RLS_BYPASS')).toBe(true)
      const r = await keel
        .tenant('dt26')
        .query<{ s: string | null }>("SELECT current_setting('app.tenant_id', true) AS s")
      expect(r.rows[0]!.s ?? '').toBe('')
    } finally {
      await keel.close()
    }
  }, 60_000)

  it("a tenant database that is gone fails that tenant's calls (KEEL_DB_UNAVAILABLE); the others and readiness carry on", async () => {
    const keel = databaseKeel(
      (tenantId) =>
        tenantId === 'ghost'
          ? { primary: { connectionString: urlFor(readStack().primary.url, 'keel_dt_missing') } }
          : dedicated(tenantId),
      { applicationName: 'keel-dbm-ghost' },
    )
    try {
      await keel.tenant('dt25').query('SELECT 1')
      const gone = await keel
        .tenant('ghost')
        .query('SELECT 1')
        .catch((e: unknown) => e)
      expect(isKeelError(gone, 'KEEL_DB_UNAVAILABLE')).toBe(true)
      const r = await keel.tenant('dt25').query<{ d: string }>('SELECT current_database() AS d')
      expect(r.rows[0]!.d).toBe('keel_dt_25')
      const health = await keel.health()
      expect(health.status).toBe('up')
      const ghost = health.databases?.find((d) => d.key.endsWith('/keel_dt_missing'))
      expect(ghost?.primary.status).toBe('down')
    } finally {
      await keel.close()
    }
  }, 60_000)

  it('keel.close() with calls waiting for the budget: they finish (or get KEEL_CLOSED), and the pools end', async () => {
    const keel = databaseKeel(dedicated, { maxConnections: 2, poolMax: 1, applicationName: 'keel-dbm-close' })
    const calls = TENANTS.slice(26, 32).map((t) => keel.tenant(t).query('SELECT pg_sleep(0.1)'))
    await new Promise((resolve) => setTimeout(resolve, 20))
    await keel.close()
    const results = await Promise.allSettled(calls)
    for (const r of results) {
      if (r.status === 'rejected') expect(isKeelError(r.reason, 'KEEL_CLOSED')).toBe(true)
    }
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThan(0)
    const su = await connect('super')
    const left = await su.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'keel-dbm-close%'",
    )
    await su.end()
    expect(left.rows[0].n).toBe(0)
  }, 60_000)
})

describe('database mode: everything above the client, unchanged', () => {
  it('spans name the tenant database and its host; keel.current(), pgPool(), the cache and jobs are per tenant', async () => {
    const exporter = new InMemorySpanExporter()
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
    const stack = readStack()
    const keel = createKeel({
      postgres: { pool: { max: 2 }, applicationName: 'keel-dbm-above' },
      tenancy: { mode: 'database', resolve: dedicated, maxConnections: 10 },
      cache: { redis: { url: stack.redis!.url } },
      jobs: {
        redis: { url: stack.redis!.url },
        queue: `q${randomBytes(4).toString('hex')}`,
        closeTimeoutMs: 2_000,
      },
      telemetry: { tracerProvider: provider },
    })
    try {
      await keel.tenant('dt27').query('SELECT 1')
      const span = exporter.getFinishedSpans().find((s) => s.name.startsWith('SELECT'))
      expect(span?.attributes).toMatchObject({
        'db.namespace': 'keel_dt_27',
        'server.address': stack.primary.host,
        'server.port': stack.primary.port,
        'keel.tenant.id': 'dt27',
      })

      // keel.current() and the pg.Pool facade follow the tenant in context to its database.
      const facade = keel.pgPool()
      const where = await keel.run(keel.tenant('dt28'), async () => {
        expect(keel.current().tenantId).toBe('dt28')
        const r = await facade.query<{ d: string }>('SELECT current_database() AS d')
        return r.rows[0]!.d
      })
      expect(where).toBe('keel_dt_28')

      // The cache is namespaced by tenant whatever the placement.
      const a = await keel.tenant('dt27').cached({ key: 'where' }, async () => 'dt27-value')
      const b = await keel.tenant('dt28').cached({ key: 'where' }, async () => 'dt28-value')
      expect([a, b]).toEqual(['dt27-value', 'dt28-value'])

      // A job runs as its tenant, in its tenant's database.
      keel.defineJob('where.am.i', {
        schema: z.object({}),
        handler: async (_payload, { db }) => {
          await db.query(`INSERT INTO items (tenant_id, body) VALUES ($1, 'from-job')`, [db.tenantId])
          return (await db.query<{ d: string }>('SELECT current_database() AS d')).rows[0]!.d
        },
      })
      keel.startWorker({ concurrency: 1 })
      const db = keel.tenant('dt29')
      const { jobId } = await db.enqueue('where.am.i', {})
      await waitFor(`job ${jobId}`, async () => (await db.jobStatus(jobId))?.state === 'completed')
      expect((await db.jobStatus(jobId))?.result).toBe('keel_dt_29')
      const rows = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM items WHERE body = 'from-job'",
        [],
        { consistency: 'strong' },
      )
      expect(rows.rows[0]!.n).toBe(1)
    } finally {
      await keel.close()
      context.disable()
    }
  }, 60_000)
})

describe('database mode: a server that stops answering', () => {
  it('SIGSTOP of the primary mid-load: calls end in KEEL_QUERY_TIMEOUT (none hangs), the budget comes back whole after SIGCONT, and every tenant is served again', async () => {
    const keel = databaseKeel(dedicated, {
      maxConnections: 4,
      poolMax: 2,
      applicationName: 'keel-dbm-stop',
      limits: { statementTimeoutMs: 500, acquireTimeoutMs: 3_000 },
    })
    let paused = false
    try {
      const tenants = TENANTS.slice(0, 8)
      for (const t of tenants) await keel.tenant(t).query('SELECT 1')
      const calls = tenants.flatMap((t) =>
        Array.from({ length: 2 }, () =>
          keel
            .tenant(t)
            .query('SELECT pg_sleep(0.2)')
            .then(
              () => 'ok',
              (e: unknown) => (e as { code?: string }).code ?? String(e),
            ),
        ),
      )
      await new Promise((resolve) => setTimeout(resolve, 50))
      await stackCtl('pause', 'primary')
      paused = true
      const outcomes = await Promise.all(calls)
      await stackCtl('resume', 'primary')
      paused = false
      // Each call ended on its own (client-side deadline or a bounded wait for the budget), none hung.
      for (const outcome of outcomes)
        expect([
          'ok',
          'KEEL_QUERY_TIMEOUT',
          'KEEL_POOL_TIMEOUT',
          'KEEL_TENANT_BUSY',
          'KEEL_DB_UNAVAILABLE',
        ]).toContain(outcome)
      expect(outcomes).toContain('KEEL_QUERY_TIMEOUT')
      // The connections given up on gave their permits back: every tenant is served within the budget.
      for (const t of tenants) {
        await waitFor(`${t} served after SIGCONT`, async () =>
          keel
            .tenant(t)
            .query<{ d: string }>('SELECT current_database() AS d')
            .then(
              (r) => r.rows[0]!.d === dbOf(t),
              () => false,
            ),
        )
      }
      const [server] = (await keel.health()).servers ?? []
      expect(server!.used).toBeLessThanOrEqual(4)
      expect(server!.waiting).toBe(0)
    } finally {
      if (paused) await stackCtl('resume', 'primary')
      await keel.close()
    }
  }, 90_000)
})
