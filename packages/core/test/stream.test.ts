import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKeel, isKeelError, type Keel } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import {
  awaitDatabasesOnReplicas,
  createTenantDatabases,
  dropTenantDatabases,
  urlFor,
} from './support/tenant-databases.js'
import { waitFor } from './support/wait.js'

// db.stream(): a cursor in a READ ONLY transaction of its own, fetched as the loop asks, ended however
// the loop stops. Every "nothing leaks" check looks at Postgres itself: no connection of this keel left
// idle in a transaction, and the next calls on the same keel served and scoped.
const table = 'stream_items'
const app = 'keel-stream-test'
let keel: Keel
let su: pg.Client

// A full collection on demand, for the dropped-stream backstop (the process has no --expose-gc).
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const codeOf = (error: unknown) =>
  isKeelError(error) ? error.code : String((error as { code?: unknown }).code ?? error)

beforeAll(async () => {
  await createRlsTable(table)
  su = await connect('super')
  await su.query(
    `INSERT INTO ${table} (tenant_id, body, n) SELECT 'acme', 'a' || g, g FROM generate_series(1, 5000) g`,
  )
  await su.query(
    `INSERT INTO ${table} (tenant_id, body, n) SELECT 'globex', 'g' || g, g FROM generate_series(1, 3000) g`,
  )
  const owner = await connect('owner')
  await owner.query(`CREATE OR REPLACE FUNCTION stream_opaque() RETURNS int LANGUAGE sql AS 'SELECT 1'`)
  await owner.end()
  keel = testKeel({ applicationName: app, pool: { max: 4 } })
})
afterAll(async () => {
  await keel.close()
  await su.query('DROP FUNCTION IF EXISTS stream_opaque()')
  await su.end()
  await dropTable(table)
})

/** This keel's connections (the app role's) and what they are doing. */
async function sessions(): Promise<Array<{ pid: number; state: string | null; query: string }>> {
  const r = await su.query<{ pid: number; state: string | null; query: string }>(
    'SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1',
    [app],
  )
  return r.rows
}

/** Nothing of this keel's is left inside a transaction (a cursor parked in the pool would be). */
async function expectNoneInTransaction(): Promise<void> {
  await waitFor('no connection idle in transaction', async () =>
    (await sessions()).every((s) => s.state === 'idle' || s.state === null),
  )
}

/** The next calls on the same keel work and see only their tenant's rows. */
async function expectScopedCalls(): Promise<void> {
  const acme = await keel.tenant('acme').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${table}`)
  const globex = await keel.tenant('globex').query<{ c: string }>(`SELECT count(*)::text AS c FROM ${table}`)
  expect([acme.rows[0]!.c, globex.rows[0]!.c]).toEqual(['5000', '3000'])
  let streamed = 0
  for await (const row of keel
    .tenant('globex')
    .stream<{ tenant_id: string }>(`SELECT tenant_id FROM ${table}`)) {
    expect(row.tenant_id).toBe('globex')
    streamed++
  }
  expect(streamed).toBe(3000)
}

describe('db.stream()', () => {
  it("streams every row of the tenant and none of another's, in batches, with parameters", async () => {
    const seen: number[] = []
    for await (const row of keel
      .tenant('acme')
      .stream<{ tenant_id: string; n: number }>(`SELECT tenant_id, n FROM ${table} WHERE n > $1`, [1000], {
        batchSize: 333,
      })) {
      expect(row.tenant_id).toBe('acme')
      seen.push(row.n)
    }
    expect(seen.length).toBe(4000)
    expect(new Set(seen).size).toBe(4000)
    await expectNoneInTransaction()
  })

  it("QueryConfig with rowMode 'array' gives array rows", async () => {
    const rows: unknown[] = []
    for await (const row of keel
      .tenant('globex')
      .stream({ text: `SELECT n, tenant_id FROM ${table} WHERE n <= 3 ORDER BY n` })) {
      rows.push(row)
    }
    expect(rows).toEqual([
      { n: 1, tenant_id: 'globex' },
      { n: 2, tenant_id: 'globex' },
      { n: 3, tenant_id: 'globex' },
    ])
    const arrays: unknown[] = []
    for await (const row of keel
      .tenant('globex')
      .stream({ text: `SELECT n, tenant_id FROM ${table} WHERE n <= 2 ORDER BY n`, rowMode: 'array' })) {
      arrays.push(row)
    }
    expect(arrays).toEqual([
      [1, 'globex'],
      [2, 'globex'],
    ])
  })

  it('fetches only when asked (backpressure): with a row held, the cursor waits, one batch sent', async () => {
    const it = keel
      .tenant('acme')
      .stream<{ n: number }>(`SELECT n FROM ${table} ORDER BY n`, [], { batchSize: 10 })
      [Symbol.asyncIterator]()
    const first = await it.next()
    expect(first.value).toEqual({ n: 1 })
    // Parked between batches: the connection is idle in its transaction and its last statement is the
    // first FETCH; nothing else is being read.
    const parked = (await sessions()).filter((s) => s.state === 'idle in transaction')
    expect(parked.map((s) => s.query)).toEqual(['FETCH 10 FROM keel_stream'])
    for (let i = 2; i <= 10; i++) expect((await it.next()).value).toEqual({ n: i })
    expect((await sessions()).filter((s) => s.state === 'idle in transaction').length).toBe(1)
    expect((await it.next()).value).toEqual({ n: 11 })
    await it.return?.()
    await expectNoneInTransaction()
  })

  it('refuses writes and session-state statements with KEEL_QUERY_INVALID, before any connection', async () => {
    const db = keel.tenant('acme')
    const attempts = [
      `UPDATE ${table} SET n = 0`,
      `DELETE FROM ${table}`,
      `WITH d AS (DELETE FROM ${table} RETURNING *) SELECT * FROM d`,
      `SET search_path = public`,
      'BEGIN',
      `SELECT 1; DELETE FROM ${table}`,
      'SELECT pg_advisory_lock(4242)',
    ]
    for (const sql of attempts) {
      const failure = await (async () => {
        for await (const _ of db.stream(sql)) break
      })().catch((error: unknown) => error)
      expect(codeOf(failure), sql).toBe('KEEL_QUERY_INVALID')
    }
    const bad = await (async () => {
      for await (const _ of db.stream(`SELECT 1`, [], { batchSize: 0 })) break
    })().catch((error: unknown) => error)
    expect(codeOf(bad)).toBe('KEEL_QUERY_INVALID')
    // What the classifier lets through as a read is still refused by the READ ONLY transaction.
    const locking = await (async () => {
      for await (const _ of db.stream(`SELECT * FROM ${table} FOR UPDATE`)) break
    })().catch((error: unknown) => error)
    expect(['KEEL_QUERY_INVALID', '25006']).toContain(codeOf(locking))
    const count = await db.query<{ c: string }>(`SELECT count(*)::text AS c FROM ${table}`)
    expect(count.rows[0]!.c).toBe('5000')
    await expectNoneInTransaction()
  })

  it("a function keel cannot vouch for (the app's own, not in safeFunctions): its connection is retired after the stream", async () => {
    let pid = 0
    for await (const row of keel
      .tenant('acme')
      .stream<{ pid: number }>('SELECT pg_backend_pid() AS pid, stream_opaque() AS o')) {
      pid = row.pid
    }
    expect(pid).toBeGreaterThan(0)
    await waitFor('that backend gone', async () => (await sessions()).every((s) => s.pid !== pid))
    await expectScopedCalls()
  })

  it('break after a few rows: rolled back, the connection clean in the pool, next calls scoped', async () => {
    let n = 0
    for await (const _ of keel.tenant('acme').stream(`SELECT * FROM ${table}`, [], { batchSize: 100 })) {
      if (++n === 150) break
    }
    await expectNoneInTransaction()
    await expectScopedCalls()
  })

  it('the consumer throws mid-stream: the error reaches the caller, nothing leaks', async () => {
    const failure = await (async () => {
      let n = 0
      for await (const _ of keel.tenant('acme').stream(`SELECT * FROM ${table}`, [], { batchSize: 100 })) {
        if (++n === 250) throw new Error('consumer failed')
      }
    })().catch((error: unknown) => error)
    expect((failure as Error).message).toBe('consumer failed')
    await expectNoneInTransaction()
    await expectScopedCalls()
  })

  it('abort while the consumer holds a row: the transaction ends at once; the loop then throws KEEL_ABORTED', async () => {
    const controller = new AbortController()
    const it = keel
      .tenant('acme')
      .stream(`SELECT * FROM ${table}`, [], { batchSize: 100, signal: controller.signal })
      [Symbol.asyncIterator]()
    await it.next()
    controller.abort()
    // Ended without the consumer coming back.
    await expectNoneInTransaction()
    const failure = await it.next().catch((error: unknown) => error)
    expect(codeOf(failure)).toBe('KEEL_ABORTED')
    await expectScopedCalls()
  })

  it('abort during a slow FETCH: cancelled server-side, the connection retired, next calls scoped', async () => {
    const controller = new AbortController()
    const slow = `SELECT n, pg_sleep(CASE WHEN n = 150 THEN 30 ELSE 0 END) FROM ${table} ORDER BY n`
    const failure = await (async () => {
      for await (const row of keel
        .tenant('acme')
        .stream<{ n: number }>(slow, [], { batchSize: 100, signal: controller.signal })) {
        if (row.n === 100) setTimeout(() => controller.abort(), 200)
      }
    })().catch((error: unknown) => error)
    expect(codeOf(failure)).toBe('KEEL_ABORTED')
    await waitFor('the slow FETCH gone', async () =>
      (await sessions()).every((s) => !s.query.includes('pg_sleep') || s.state === 'idle'),
    )
    await expectNoneInTransaction()
    await expectScopedCalls()
  })

  it('the backend killed mid-stream (pg_terminate_backend): the loop fails, next calls succeed and are scoped', async () => {
    const failure = await (async () => {
      let n = 0
      for await (const _ of keel.tenant('acme').stream(`SELECT * FROM ${table}`, [], { batchSize: 100 })) {
        if (++n === 50) {
          const parked = (await sessions()).filter((s) => s.state === 'idle in transaction')
          expect(parked.length).toBe(1)
          await su.query('SELECT pg_terminate_backend($1)', [parked[0]!.pid])
          await waitFor('backend gone', async () => (await sessions()).every((s) => s.pid !== parked[0]!.pid))
        }
      }
    })().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(Error)
    await expectNoneInTransaction()
    await expectScopedCalls()
  })

  it('an iterator dropped mid-stream without return(), and an export dropped mid-read: once collected, their transactions end', async () => {
    await (async () => {
      const it = keel
        .tenant('acme')
        .stream(`SELECT * FROM ${table}`, [], { batchSize: 10 })
        [Symbol.asyncIterator]()
      await it.next()
      const out = keel.tenant('acme').export({ tables: [table], format: 'ndjson', batchSize: 10 })
      await out[Symbol.asyncIterator]().next()
    })()
    // The stream's cursor waits idle in its transaction; the export's COPY waits active (ClientWrite).
    expect(
      (await sessions()).filter((s) => s.state === 'idle in transaction' || s.state === 'active').length,
    ).toBe(2)
    await waitFor('the dropped streams ended', async () => {
      gc()
      return (await sessions()).every((s) => s.state === 'idle' || s.state === null)
    })
    await expectScopedCalls()
  })

  it('keel.close() waits for a stream in progress; then stream() is refused with KEEL_CLOSED', async () => {
    const k = testKeel({ applicationName: `${app}-close`, pool: { max: 2 } })
    const it = k
      .tenant('acme')
      .stream<{ n: number }>(`SELECT n FROM ${table} ORDER BY n`, [], { batchSize: 10 })
      [Symbol.asyncIterator]()
    await it.next()
    let closed = false
    const closing = k.close().then(() => {
      closed = true
    })
    // Drain the stream: close() is still waiting for it while rows keep coming.
    let n = 1
    for (;;) {
      const next = await it.next()
      if (next.done === true) break
      n++
      if (n === 2000) expect(closed).toBe(false)
    }
    expect(n).toBe(5000)
    await closing
    expect(() => k.tenant('acme').stream('SELECT 1')).toThrow(
      expect.objectContaining({ code: 'KEEL_CLOSED' }),
    )
  })

  it('inside db.transaction() the session refuses stream() (it reads in a transaction of its own)', async () => {
    const db = keel.tenant('acme')
    const failure = await db
      .transaction(async () => {
        db.stream('SELECT 1')
      })
      .catch((error: unknown) => error)
    expect(codeOf(failure)).toBe('KEEL_QUERY_INVALID')
  })
})

describe('db.stream() through the lagged replica', () => {
  const ryw = 'stream_ryw'
  let lagged: Keel

  beforeAll(async () => {
    await createRlsTable(ryw)
    await awaitOnReplicas(ryw)
    lagged = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000, pool: { max: 4 } })
    await waitFor('replica in rotation', async () =>
      (await lagged.health()).replicas.every((r) => r.inRotation),
    )
  })
  afterAll(async () => {
    await lagged.close()
    await dropTable(ryw)
  })

  it("sees the session's own writes, and a later session's with the consistency token", async () => {
    const db = lagged.tenant('ryw')
    let stale = 0
    for (let v = 1; v <= 20; v++) {
      await db.query(`INSERT INTO ${ryw} (tenant_id, n) VALUES ('ryw', $1)`, [v])
      let max = 0
      for await (const row of db.stream<{ m: number }>(`SELECT max(n) AS m FROM ${ryw}`)) max = row.m
      if (max !== v) stale++
      // The token handed to another request: its stream sees the write too.
      const next = lagged.tenant('ryw', { consistencyToken: db.consistencyToken })
      for await (const row of next.stream<{ m: number }>(`SELECT max(n) AS m FROM ${ryw}`)) max = row.m
      if (max !== v) stale++
    }
    expect(stale).toBe(0)
  })

  it("control: with consistency 'eventual' the same stream does read the lagged replica's stale rows", async () => {
    const db = lagged.tenant('ryw_control')
    let stale = 0
    for (let v = 1; v <= 5; v++) {
      await db.query(`INSERT INTO ${ryw} (tenant_id, n) VALUES ('ryw_control', $1)`, [v])
      let max: number | null = null
      for await (const row of db.stream<{ m: number | null }>(`SELECT max(n) AS m FROM ${ryw}`, [], {
        consistency: 'eventual',
      }))
        max = row.m
      if (max !== v) stale++
    }
    expect(stale).toBeGreaterThan(0)
  })

  it("db.export() through the lagged replica sees the session's own writes in its snapshot", async () => {
    const db = lagged.tenant('ryw_export')
    for (let v = 1; v <= 5; v++) {
      await db.query(`INSERT INTO ${ryw} (tenant_id, n) VALUES ('ryw_export', $1)`, [v])
      let rows = 0
      for await (const chunk of db.export({ tables: [ryw], format: 'ndjson' })) {
        rows += (chunk as string).split('\n').filter((line) => line !== '').length
      }
      expect(rows).toBe(v)
    }
  })

  it('once the replica has replayed the writes, the stream is served by the replica', async () => {
    const db = lagged.tenant('ryw')
    await db.query(`INSERT INTO ${ryw} (tenant_id, n) VALUES ('ryw', 100)`)
    await waitFor('served by the replica', async () => {
      for await (const row of db.stream<{ r: boolean; m: number }>(
        `SELECT pg_is_in_recovery() AS r, max(n) AS m FROM ${ryw}`,
      )) {
        expect(row.m).toBe(100)
        return row.r
      }
      return false
    })
  })
})

describe('db.stream() and db.export() in schema mode', () => {
  const schemas = { acme: 'Stream-acme', globex: 'Stream-globex' }
  let schemaKeel: Keel

  beforeAll(async () => {
    const owner = await connect('owner')
    try {
      for (const [id, schema] of Object.entries(schemas)) {
        await owner.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
        await owner.query(`CREATE SCHEMA "${schema}"`)
        await owner.query(`GRANT USAGE ON SCHEMA "${schema}" TO keel_app`)
        await owner.query(`CREATE TABLE "${schema}".notes (id serial PRIMARY KEY, body text NOT NULL)`)
        await owner.query(`GRANT SELECT ON ALL TABLES IN SCHEMA "${schema}" TO keel_app`)
        await owner.query(
          `INSERT INTO "${schema}".notes (body) SELECT $1 || g FROM generate_series(1, 2500) g`,
          [`${id}-`],
        )
      }
    } finally {
      await owner.end()
    }
    // One connection: both tenants' streams take turns on the same backend.
    schemaKeel = testKeel({
      pool: { max: 1 },
      tenancy: { mode: 'schema', schemaFor: (id: string) => `Stream-${id}` },
    })
  })
  afterAll(async () => {
    await schemaKeel.close()
    const owner = await connect('owner')
    for (const schema of Object.values(schemas))
      await owner.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await owner.end()
  })

  it("each tenant's stream and export read its own schema, alternating on one connection", async () => {
    for (const id of ['acme', 'globex', 'acme'] as const) {
      let n = 0
      for await (const row of schemaKeel.tenant(id).stream<{ body: string }>('SELECT body FROM notes', [], {
        batchSize: 400,
      })) {
        expect(row.body.startsWith(`${id}-`)).toBe(true)
        if (++n === 1000) break
      }
      let lines = 0
      for await (const chunk of schemaKeel
        .tenant(id)
        .export({ tables: ['notes'], format: 'csv', batchSize: 700 })) {
        for (const line of (chunk as string).split('\n')) {
          if (line === '' || line === 'id,body') continue
          expect(line).toContain(`,${id}-`)
          lines++
        }
      }
      expect(lines).toBe(2500)
    }
    const path = await schemaKeel
      .tenant('globex')
      .query<{ p: string }>('SELECT current_setting($1) AS p', ['search_path'])
    expect(path.rows[0]?.p).toBe('"Stream-globex"')
  })
})

describe('db.export() not read', () => {
  it('holds no connection until it is read; destroyed unread, it never opens one', async () => {
    const before = (await sessions()).filter((s) => s.state !== 'idle').length
    const out = keel.tenant('acme').export({ tables: [table], format: 'ndjson' })
    await new Promise((r) => setTimeout(r, 200))
    expect((await sessions()).filter((s) => s.state !== 'idle').length).toBe(before)
    out.destroy()
    await new Promise((r) => out.once('close', r))
    await expectNoneInTransaction()
  })
})

describe('keel.close() with an export in flight', () => {
  it('closeTimeoutMs short: the parked export is cancelled with KEEL_CLOSED, close() resolves, nothing left open', async () => {
    const k = testKeel({ applicationName: `${app}-closing`, pool: { max: 2 }, closeTimeoutMs: 300 })
    const out = k.tenant('acme').export({ tables: [table], format: 'ndjson', batchSize: 10 })
    const it = out[Symbol.asyncIterator]()
    await it.next()
    // The consumer stops reading; close() waits 300 ms for the export, then gives up on it.
    await k.close()
    const failure = await (async () => {
      for (;;) if ((await it.next()).done === true) return 'ended'
    })().catch((error: unknown) => error)
    expect(codeOf(failure)).toBe('KEEL_CLOSED')
    await waitFor('no connection of the closed keel left', async () => {
      const r = await su.query('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [
        `${app}-closing`,
      ])
      return r.rowCount === 0
    })
  })
})

describe('db.stream() and db.export() in database mode', () => {
  const databases = ['keel_stream_d1', 'keel_stream_d2']
  let dbKeel: Keel

  beforeAll(async () => {
    await createTenantDatabases(databases, ['items'])
    const stack = readStack()
    for (const [i, name] of databases.entries()) {
      const owner = new pg.Client({
        connectionString: urlFor(stack.primary.ownerUrl, name),
      })
      await owner.connect()
      await owner.query(
        `INSERT INTO items (tenant_id, body) SELECT $1, $1 || '-' || g FROM generate_series(1, 1500) g`,
        [`d${i + 1}`],
      )
      await owner.end()
    }
    await awaitDatabasesOnReplicas(databases)
    dbKeel = createKeel({
      postgres: { pool: { max: 2 }, applicationName: `${app}-dbm` },
      tenancy: {
        mode: 'database',
        maxConnections: 6,
        resolve: async (id) =>
          id === 'd1' || id === 'd2'
            ? {
                primary: { connectionString: urlFor(stack.primary.url, `keel_stream_${id}`) },
                replicas: [
                  {
                    connectionString: urlFor(
                      stack.replicas.find((r) => r.name === 'replica2')!.url,
                      `keel_stream_${id}`,
                    ),
                  },
                ],
              }
            : null,
      },
    })
  }, 120_000)
  afterAll(async () => {
    await dbKeel.close()
    await dropTenantDatabases(databases)
  })

  it('each tenant streams and exports its own database only, and its own fresh write through the lagged replica', async () => {
    for (const id of ['d1', 'd2', 'd1'] as const) {
      const db = dbKeel.tenant(id)
      await db.query(`INSERT INTO items (tenant_id, body) VALUES ($1, 'fresh')`, [id])
      const databasesSeen = new Set<string>()
      let fresh = 0
      let rows = 0
      for await (const row of db.stream<{ d: string; body: string }>(
        'SELECT current_database() AS d, body FROM items',
        [],
        { batchSize: 500 },
      )) {
        databasesSeen.add(row.d)
        if (row.body === 'fresh') fresh++
        rows++
      }
      expect([...databasesSeen]).toEqual([`keel_stream_${id}`])
      expect(fresh).toBeGreaterThan(0)
      let exported = 0
      for await (const chunk of db.export({ tables: ['items'], format: 'ndjson' })) {
        for (const line of (chunk as string).split('\n')) {
          if (line === '') continue
          expect((JSON.parse(line) as { row: { tenant_id: string } }).row.tenant_id).toBe(id)
          exported++
        }
      }
      expect(exported).toBe(rows)
    }
  })
})
