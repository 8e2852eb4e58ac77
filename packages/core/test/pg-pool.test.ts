import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKeel, isKeelError, type Keel, type TenantClient } from '../src/index.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { pgbouncer } from './support/pgbouncer.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// db.pgPool() / keel.pgPool(): a pg.Pool of the app's pg over keel (issue #12, ADR 0031).
const table = 'pg_pool_items'
const run = randomBytes(4).toString('hex')
let keel: Keel

type Row = { tenant_id: string; body: string; n: number }
type Client = {
  query(text: unknown, values?: unknown, cb?: unknown): Promise<pg.QueryResult>
  release(error?: unknown): void
}

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  keel = testKeel({ pool: { max: 6 }, limits: { tenantConnections: 3, acquireTimeoutMs: 5_000 } })
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

const tag = (s: string) => `${s}-${run}`
const insert = `INSERT INTO ${table} (tenant_id, body, n) VALUES ($1, $2, $3)`
/** The tenant's bodies matching a LIKE pattern, read on the primary. */
async function bodies(db: TenantClient, pattern: string): Promise<string[]> {
  const r = await db.query<{ body: string }>(
    `SELECT body FROM ${table} WHERE body LIKE $1 ORDER BY body`,
    [pattern],
    { route: 'primary' },
  )
  return r.rows.map((x) => x.body)
}
/** The stack's primary URL moved to a port nobody listens on (no credentials written here). */
function unreachablePrimary(): string {
  const url = new URL(readStack().primary.url)
  url.port = '1'
  return url.toString()
}
const connectClient = (pool: pg.Pool) => pool.connect() as unknown as Promise<Client>
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as { code?: string; message?: string },
  )

describe('the pool', () => {
  it('is an instanceof pg.Pool of the app’s pg, the same object on every call, with pg-pool options', () => {
    const db = keel.tenant('acme')
    expect(db.pgPool()).toBeInstanceOf(pg.Pool)
    expect(keel.pgPool()).toBeInstanceOf(pg.Pool)
    expect(db.pgPool()).toBe(db.pgPool())
    expect(keel.pgPool()).toBe(keel.pgPool())
    expect(db.pgPool().options).toMatchObject({ max: 6, database: 'keel' })
    expect(JSON.stringify(db.pgPool().options)).not.toMatch(/password|app@/)
  })

  it('query() is scoped: only the tenant’s rows; another tenant’s row is refused (42501); promise and callback', async () => {
    const acme = keel.tenant('acme').pgPool()
    const globex = keel.tenant('globex').pgPool()
    await acme.query(insert, ['acme', tag('scoped-a'), 1])
    await globex.query({ text: insert, values: ['globex', tag('scoped-g'), 2] })
    const seen = await acme.query(`SELECT tenant_id, body FROM ${table} WHERE body LIKE $1`, [tag('scoped%')])
    expect(seen.rows).toEqual([{ tenant_id: 'acme', body: tag('scoped-a') }])
    expect(seen.fields.map((f) => f.name)).toEqual(['tenant_id', 'body'])
    expect(await failure(acme.query(insert, ['globex', tag('forged'), 3]))).toMatchObject({ code: '42501' })
    // Callback style (Knex): (err, result), and nothing returned.
    const viaCallback = await new Promise<pg.QueryResult>((resolve, reject) => {
      const returned = globex.query(
        `SELECT body FROM ${table} WHERE body LIKE $1`,
        [tag('scoped%')],
        (error: Error | null, result?: pg.QueryResult) => (error ? reject(error) : resolve(result!)),
      )
      expect(returned).toBeUndefined()
    })
    expect(viaCallback.rows).toEqual([{ body: tag('scoped-g') }])
    const callbackError = await new Promise<unknown>((resolve) =>
      acme.query({ text: insert, values: ['globex', tag('forged'), 3] }, (error: Error | null) =>
        resolve(error),
      ),
    )
    expect(callbackError).toMatchObject({ code: '42501' })
  })

  it("rowMode 'array' through the pool keeps duplicate column names", async () => {
    const r = await keel
      .tenant('acme')
      .pgPool()
      .query({ text: 'SELECT 1 AS a, 2 AS a', rowMode: 'array' } as pg.QueryArrayConfig)
    expect(r.rows).toEqual([[1, 2]])
  })

  it('refuses transaction control in pool.query() and session-level SET, naming what to do', async () => {
    const pool = keel.tenant('acme').pgPool()
    expect(await failure(pool.query('BEGIN'))).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    const set = await failure(pool.query('SET search_path TO other'))
    expect(set).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    expect(set?.message).toMatch(/searchPath/)
    const client = await connectClient(pool)
    expect(await failure(client.query('SET TIME ZONE UTC'))).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    expect(await failure(client.query('SAVEPOINT a'))).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    expect(await failure(client.query("PREPARE TRANSACTION 'x'"))).toMatchObject({
      code: 'KEEL_QUERY_INVALID',
    })
    await client.query('BEGIN')
    expect(await failure(client.query('COMMIT AND CHAIN'))).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    await client.query('ROLLBACK')
    client.release()
    // db.query itself still refuses transaction control.
    expect(await failure(keel.tenant('acme').query('BEGIN'))).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
  })

  it('end() ends nothing of keel', async () => {
    const pool = keel.tenant('acme').pgPool()
    await pool.end()
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
  })
})

describe('clients from connect()', () => {
  it('BEGIN, SET TRANSACTION and COMMIT cost no round trip and no connection', async () => {
    // A primary nobody listens on: anything sent would fail with KEEL_DB_UNAVAILABLE.
    const offline = createKeel({
      postgres: { primary: { connectionString: unreachablePrimary() } },
    })
    try {
      const client = await connectClient(offline.tenant('acme').pgPool())
      const begin = await client.query('BEGIN')
      expect(begin).toMatchObject({ command: 'BEGIN', rowCount: null, rows: [], fields: [] })
      expect((await client.query('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).command).toBe('SET')
      expect((await client.query('COMMIT')).command).toBe('COMMIT')
      await client.query('START TRANSACTION READ ONLY')
      expect((await client.query('ROLLBACK')).command).toBe('ROLLBACK')
      // The check can fail: a real statement does try to reach the primary.
      expect(await failure(client.query('SELECT 1'))).toMatchObject({ code: 'KEEL_DB_UNAVAILABLE' })
      client.release()
    } finally {
      await offline.close()
    }
  })

  it('maps the isolation level and access mode onto the keel transaction (BEGIN ..., START ..., SET TRANSACTION)', async () => {
    const pool = keel.tenant('acme').pgPool()
    const probe = `SELECT current_setting('transaction_isolation') AS iso, current_setting('transaction_read_only') AS ro, current_setting('transaction_deferrable') AS d`
    const cases: Array<[string[], Record<string, string>]> = [
      [['BEGIN ISOLATION LEVEL SERIALIZABLE'], { iso: 'serializable', ro: 'off', d: 'off' }],
      [
        ['START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY'],
        { iso: 'repeatable read', ro: 'on', d: 'off' },
      ],
      [
        ['BEGIN', 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE'],
        { iso: 'serializable', ro: 'off', d: 'off' },
      ],
      [
        ['begin;', 'set transaction isolation level repeatable read', 'SET TRANSACTION READ ONLY'],
        { iso: 'repeatable read', ro: 'on', d: 'off' },
      ],
      [
        ['BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE'],
        { iso: 'serializable', ro: 'on', d: 'on' },
      ],
      [['BEGIN'], { iso: 'read committed', ro: 'off', d: 'off' }],
    ]
    for (const [opening, expected] of cases) {
      const client = await connectClient(pool)
      for (const statement of opening) await client.query(statement)
      const first = await client.query(probe)
      expect(first.rows[0], opening.join('; ')).toEqual(expected)
      // After the first statement, SET TRANSACTION goes to Postgres, which refuses another level there.
      const other = expected.iso === 'serializable' ? 'READ COMMITTED' : 'SERIALIZABLE'
      expect(await failure(client.query(`SET TRANSACTION ISOLATION LEVEL ${other}`))).toMatchObject({
        code: '25001',
      })
      await client.query('ROLLBACK')
      client.release()
    }
  })

  it('runs a transaction on one primary connection with the scope, and commits', async () => {
    const db = keel.tenant('acme')
    const client = await connectClient(db.pgPool())
    await client.query('BEGIN')
    const a = await client.query(
      `SELECT pg_backend_pid() AS pid, txid_current() AS x, pg_is_in_recovery() AS r`,
    )
    const ins = await client.query(insert, ['acme', tag('tx-commit'), 1])
    expect(ins).toMatchObject({ command: 'INSERT', rowCount: 1 })
    const b = await client.query(`SELECT pg_backend_pid() AS pid, txid_current() AS x`)
    expect(b.rows[0]).toEqual({ pid: a.rows[0]!.pid, x: a.rows[0]!.x })
    expect(a.rows[0]!.r).toBe(false)
    // Not visible outside before COMMIT.
    expect(await bodies(db, tag('tx-commit'))).toEqual([])
    expect(await failure(client.query(insert, ['globex', tag('tx-forged'), 1]))).toMatchObject({
      code: '42501',
    })
    await client.query('ROLLBACK')
    await client.query('BEGIN')
    await client.query(insert, ['acme', tag('tx-commit'), 1])
    expect((await client.query('COMMIT')).command).toBe('COMMIT')
    client.release()
    expect(await bodies(db, tag('tx-commit'))).toEqual([tag('tx-commit')])
  })

  it('nests savepoints (SAVEPOINT, RELEASE, ROLLBACK TO, quoted names) and recovers from an error with ROLLBACK TO', async () => {
    const db = keel.tenant('acme')
    const client = await connectClient(db.pgPool())
    await client.query('BEGIN')
    expect((await client.query('SAVEPOINT "Outer SP"')).command).toBe('SAVEPOINT')
    await client.query(insert, ['acme', tag('sp-a'), 1])
    await client.query('SAVEPOINT s1')
    await client.query(insert, ['acme', tag('sp-b'), 1])
    await client.query('savepoint S2')
    await client.query(insert, ['acme', tag('sp-c'), 1])
    expect((await client.query('ROLLBACK TO s2')).command).toBe('ROLLBACK')
    expect((await client.query('RELEASE SAVEPOINT s1')).command).toBe('RELEASE')
    await client.query('SAVEPOINT s3')
    expect(await failure(client.query(insert, ['globex', tag('sp-x'), 1]))).toMatchObject({ code: '42501' })
    expect(await failure(client.query('SELECT 1'))).toMatchObject({ code: '25P02' })
    await client.query('ROLLBACK TO SAVEPOINT s3')
    await client.query(insert, ['acme', tag('sp-d'), 1])
    await client.query('RELEASE "Outer SP"')
    await client.query('COMMIT')
    client.release()
    expect(await bodies(db, tag('sp-%'))).toEqual([tag('sp-a'), tag('sp-b'), tag('sp-d')])
  })

  it('rolls back on error: ROLLBACK undoes everything, and COMMIT after a failed statement is KEEL_TRANSACTION_ABORTED', async () => {
    const db = keel.tenant('acme')
    const pool = db.pgPool()
    const client = await connectClient(pool)
    await client.query('BEGIN')
    await client.query(insert, ['acme', tag('rb-a'), 1])
    await failure(client.query(insert, ['globex', tag('rb-x'), 1]))
    await client.query('ROLLBACK')
    await client.query('BEGIN')
    await client.query(insert, ['acme', tag('rb-b'), 1])
    await failure(client.query('SELECT 1/0'))
    expect(await failure(client.query('COMMIT'))).toMatchObject({ code: 'KEEL_TRANSACTION_ABORTED' })
    // An ORM's ROLLBACK after the failed COMMIT: there is no transaction left, as in Postgres.
    expect((await client.query('ROLLBACK')).command).toBe('ROLLBACK')
    client.release()
    expect(await bodies(db, tag('rb-%'))).toEqual([])
  })

  it('release() mid-transaction leaves no open transaction on the pooled connection; release(err) retires it', async () => {
    // txid_current_if_assigned() declared safe: else it would be opaque, and ROLLBACK would retire the
    // connection anyway (ADR 0022), which is not what this test is about.
    const one = testKeel({ pool: { max: 1 }, safeFunctions: ['txid_current_if_assigned'] })
    const owner = await connect('super')
    try {
      const db = one.tenant('acme')
      const pool = db.pgPool()
      const client = await connectClient(pool)
      await client.query('BEGIN')
      await client.query(insert, ['acme', tag('rel-a'), 1])
      const inside = await client.query('SELECT pg_backend_pid() AS pid, txid_current_if_assigned() AS x')
      expect(inside.rows[0]!.x).not.toBeNull()
      client.release()
      // The pool has one connection: the next statement gets the same backend, outside any transaction.
      const after = await pool.query('SELECT pg_backend_pid() AS pid, txid_current_if_assigned() AS x')
      expect(after.rows[0]).toEqual({ pid: inside.rows[0]!.pid, x: null })
      const stuck = await owner.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND state LIKE 'idle in transaction%'`,
        [inside.rows[0]!.pid],
      )
      expect(stuck.rows[0]!.n).toBe(0)
      expect(await bodies(db, tag('rel-a'))).toEqual([])

      const second = await connectClient(pool)
      await second.query('BEGIN')
      const pinned = await second.query('SELECT pg_backend_pid() AS pid')
      await second.query(insert, ['acme', tag('rel-b'), 1])
      second.release(new Error('the ORM gave up'))
      const next = await pool.query('SELECT pg_backend_pid() AS pid, txid_current_if_assigned() AS x')
      expect(next.rows[0]!.x).toBeNull()
      expect(next.rows[0]!.pid).not.toBe(pinned.rows[0]!.pid)
      expect(await bodies(db, tag('rel-b'))).toEqual([])
    } finally {
      await owner.end()
      await one.close()
    }
  })

  it('lends a pg.Client-shaped client: an EventEmitter with pg’s quoting helpers, harmless connect()/end()', async () => {
    const client = (await keel.tenant('acme').pgPool().connect()) as unknown as pg.Client & {
      release(): void
    }
    const onError = () => undefined
    client.on('error', onError)
    client.removeListener('error', onError)
    expect(client.escapeIdentifier('a"b')).toBe('"a""b"')
    expect(client.escapeLiteral("it's")).toBe("'it''s'")
    await client.connect()
    expect((await client.query({ text: 'SELECT 1 AS a, 2 AS a', rowMode: 'array' })).rows).toEqual([[1, 2]])
    await client.end()
  })

  it('connect() in callback style gets (err, client, release), and the client takes callbacks', async () => {
    const pool = keel.tenant('acme').pgPool()
    const result = await new Promise<pg.QueryResult>((resolve, reject) => {
      pool.connect((error, client, release) => {
        if (error) return reject(error)
        const c = client as unknown as {
          query(t: string, cb: (e: Error | null, r?: pg.QueryResult) => void): void
        }
        c.query('BEGIN', (e1) => {
          if (e1) return reject(e1)
          c.query('SELECT 41 + 1 AS n', (e2, r) => {
            if (e2) return reject(e2)
            c.query('COMMIT', (e3) => {
              release()
              if (e3) reject(e3)
              else resolve(r!)
            })
          })
        })
      })
    })
    expect(result.rows).toEqual([{ n: 42 }])
  })

  it('an ORM transaction inside db.transaction() is a savepoint of it', async () => {
    const db = keel.tenant('acme')
    await expect(
      db.transaction(async (tx) => {
        await tx.query(insert, ['acme', tag('nest-outer'), 1])
        const client = await connectClient(db.pgPool())
        await client.query('BEGIN')
        await client.query(insert, ['acme', tag('nest-inner'), 1])
        await client.query('ROLLBACK')
        await client.query('BEGIN')
        await client.query(insert, ['acme', tag('nest-kept'), 1])
        await client.query('COMMIT')
        expect(await failure(client.query('BEGIN ISOLATION LEVEL SERIALIZABLE'))).toMatchObject({
          code: 'KEEL_QUERY_INVALID',
        })
        client.release()
        const seen = await tx.query<{ body: string }>(
          `SELECT body FROM ${table} WHERE body LIKE $1 ORDER BY body`,
          [tag('nest-%')],
        )
        return seen.rows.map((r) => r.body)
      }),
    ).resolves.toEqual([tag('nest-kept'), tag('nest-outer')])
    expect(await bodies(db, tag('nest-%'))).toEqual([tag('nest-kept'), tag('nest-outer')])
  })
})

describe('keel.pgPool(): follows keel.current()', () => {
  it('with no tenant in context, every call is KEEL_NO_TENANT_CONTEXT and nothing is sent', async () => {
    // A primary nobody listens on: a statement sent would be KEEL_DB_UNAVAILABLE instead.
    const offline = createKeel({
      postgres: { primary: { connectionString: unreachablePrimary() } },
    })
    try {
      const pool = offline.pgPool()
      expect(await failure(pool.query('SELECT 1'))).toMatchObject({ code: 'KEEL_NO_TENANT_CONTEXT' })
      expect(await failure(pool.query({ text: 'SELECT 1', rowMode: 'array' }))).toMatchObject({
        code: 'KEEL_NO_TENANT_CONTEXT',
      })
      expect(await failure(pool.connect())).toMatchObject({ code: 'KEEL_NO_TENANT_CONTEXT' })
      const viaCallback = await new Promise<unknown>((resolve) =>
        pool.query('SELECT 1', (error: Error | null) => resolve(error)),
      )
      expect(isKeelError(viaCallback, 'KEEL_NO_TENANT_CONTEXT')).toBe(true)
      const connectCallback = await new Promise<unknown>((resolve) => pool.connect((error) => resolve(error)))
      expect(isKeelError(connectCallback, 'KEEL_NO_TENANT_CONTEXT')).toBe(true)
      // A client lent inside a context, used outside one: the same.
      const client = await offline.run(offline.tenant('acme'), () => connectClient(pool))
      expect(await failure(client.query('SELECT 1'))).toMatchObject({ code: 'KEEL_NO_TENANT_CONTEXT' })
      for (const statement of ['BEGIN', 'SET TRANSACTION READ ONLY', 'COMMIT', 'ROLLBACK', 'SAVEPOINT a']) {
        expect(await failure(client.query(statement)), statement).toMatchObject({
          code: 'KEEL_NO_TENANT_CONTEXT',
        })
      }
    } finally {
      await offline.close()
    }
  })

  it("a client's transaction stays its tenant's: another tenant's context is refused, ROLLBACK works anywhere", async () => {
    const pool = keel.pgPool()
    const acme = keel.tenant('acme')
    const client = await keel.run(acme, async () => {
      const c = await connectClient(pool)
      await c.query('BEGIN')
      await c.query(insert, ['acme', tag('kept-across'), 1])
      return c
    })
    const fromGlobex = await keel.run(keel.tenant('globex'), () => failure(client.query('SELECT 1')))
    expect(fromGlobex).toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    expect(await failure(client.query('SELECT 1'))).toMatchObject({ code: 'KEEL_NO_TENANT_CONTEXT' })
    // Ending it needs no context: it only closes what acme opened.
    expect((await client.query('ROLLBACK')).command).toBe('ROLLBACK')
    client.release()
    expect(await bodies(acme, tag('kept-across'))).toEqual([])
  })

  it('inside db.transaction(fn), pool.query runs in that transaction (as keel.current() does)', async () => {
    const db = keel.tenant('acme')
    const body = tag('in-callback')
    const seen = await keel.run(db, () =>
      db
        .transaction(async (tx) => {
          await tx.query(insert, ['acme', body, 1])
          const r = await keel
            .pgPool()
            .query(`SELECT count(*)::int AS n FROM ${table} WHERE body = $1`, [body])
          throw Object.assign(new Error('roll back'), { n: r.rows[0]!.n })
        })
        .catch((e: { n: number }) => e.n),
    )
    expect(seen).toBe(1)
    expect(await bodies(db, body)).toEqual([])
  })

  it('200 interleaved requests of several tenants through one pool see only their own rows', async () => {
    const pool = keel.pgPool()
    const tenants = ['t_a', 't_b', 't_c', 't_d']
    const errors: string[] = []
    const request = async (i: number) => {
      const tenant = tenants[i % tenants.length]!
      await keel.run(keel.tenant(tenant), async () => {
        const body = tag(`many-${tenant}-${i}`)
        if (i % 3 === 0) {
          const client = await connectClient(pool)
          try {
            await client.query('BEGIN')
            await client.query(insert, [tenant, body, i])
            const seen = await client.query(`SELECT DISTINCT tenant_id FROM ${table} WHERE body LIKE $1`, [
              tag('many-%'),
            ])
            for (const r of seen.rows)
              if (r.tenant_id !== tenant) errors.push(`${tenant} saw ${r.tenant_id} in tx`)
            await client.query('COMMIT')
          } finally {
            client.release()
          }
        } else {
          await pool.query(insert, [tenant, body, i])
        }
        await new Promise((resolve) => setImmediate(resolve))
        const seen = await pool.query<Row>(`SELECT tenant_id, body, n FROM ${table} WHERE body LIKE $1`, [
          tag('many-%'),
        ])
        for (const r of seen.rows) if (r.tenant_id !== tenant) errors.push(`${tenant} saw ${r.tenant_id}`)
        if (!seen.rows.some((r) => r.body === body)) errors.push(`${tenant} missed its own ${body}`)
      })
    }
    await Promise.all(Array.from({ length: 200 }, (_, i) => request(i)))
    expect(errors).toEqual([])
    const owner = await connect('super')
    try {
      const r = await owner.query(
        `SELECT tenant_id, count(*)::int AS n FROM ${table} WHERE body LIKE $1 GROUP BY 1 ORDER BY 1`,
        [tag('many-%')],
      )
      expect(r.rows).toEqual(tenants.map((t) => ({ tenant_id: t, n: 50 })))
    } finally {
      await owner.end()
    }
  })
})

describe('routing through the facade', () => {
  let lagged: Keel
  beforeAll(async () => {
    // replica2 replays WAL 1.5 s late.
    lagged = testKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000, pool: { max: 4 } })
    await waitFor('replica2 in rotation', async () =>
      (await lagged.health()).replicas.every((r) => r.inRotation),
    )
  })
  afterAll(() => lagged.close())

  it('reads go to the replica when the session allows; a facade write then read sees it through the lagged replica', async () => {
    const probe = `SELECT pg_is_in_recovery() AS replica, count(*)::int AS n FROM ${table} WHERE body = $1`
    const fresh = lagged.tenant('acme').pgPool()
    expect((await fresh.query(probe, ['nothing'])).rows[0]!.replica).toBe(true)

    const db = lagged.tenant('acme')
    const body = tag('ryw-pool')
    await keel.run(db, () => undefined)
    await db.pgPool().query(insert, ['acme', body, 1])
    const token = db.consistencyToken
    expect(token).toBeDefined()
    expect((await db.pgPool().query(probe, [body])).rows[0]!.n).toBe(1)
    // The token carried to the next request's session (and keel.pgPool() there) still sees it.
    const next = lagged.tenant('acme', { consistencyToken: token })
    expect((await lagged.run(next, () => lagged.pgPool().query(probe, [body]))).rows[0]!.n).toBe(1)
    // Without it the lagged replica answers, stale (the check can fail).
    expect((await lagged.tenant('acme').pgPool().query(probe, [body])).rows[0]).toEqual({
      replica: true,
      n: 0,
    })
  })

  it('keel.pgPool() advances the current session’s token; a transaction commits on the primary and advances it', async () => {
    const probe = `SELECT pg_is_in_recovery() AS replica, count(*)::int AS n FROM ${table} WHERE body = $1`
    const db = lagged.tenant('acme')
    const body = tag('ryw-current')
    await lagged.run(db, () => lagged.pgPool().query(insert, ['acme', body, 1]))
    const afterWrite = db.consistencyToken
    expect(afterWrite).toBeDefined()
    expect((await lagged.run(db, () => lagged.pgPool().query(probe, [body]))).rows[0]!.n).toBe(1)

    const txBody = tag('ryw-tx')
    await lagged.run(db, async () => {
      const client = await connectClient(lagged.pgPool())
      await client.query('BEGIN')
      const inTx = await client.query(probe, [txBody])
      expect(inTx.rows[0]!.replica).toBe(false)
      await client.query(insert, ['acme', txBody, 1])
      await client.query('COMMIT')
      client.release()
    })
    expect(db.consistencyToken).not.toBe(afterWrite)
    const next = lagged.tenant('acme', { consistencyToken: db.consistencyToken })
    expect((await next.pgPool().query(probe, [txBody])).rows[0]!.n).toBe(1)
  })
})

describe('through PgBouncer in transaction mode', () => {
  it('facade transactions (isolation, savepoints) and interleaved tenants stay right', async () => {
    const { plain } = await pgbouncer()
    const bounced = testKeel({ connectionString: plain.url, pool: { max: 3 } })
    try {
      const pool = bounced.pgPool()
      const errors: string[] = []
      const request = async (i: number) => {
        const tenant = i % 2 === 0 ? 'pgb_a' : 'pgb_b'
        await bounced.run(bounced.tenant(tenant), async () => {
          const client = await connectClient(pool)
          try {
            await client.query('BEGIN')
            await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ')
            const iso = await client.query(`SELECT current_setting('transaction_isolation') AS iso`)
            if (iso.rows[0]!.iso !== 'repeatable read') errors.push(`${tenant}: ${iso.rows[0]!.iso}`)
            await client.query('SAVEPOINT s')
            await client.query(insert, [tenant, tag(`pgb-${tenant}-${i}-dropped`), i])
            await client.query('ROLLBACK TO SAVEPOINT s')
            await client.query(insert, [tenant, tag(`pgb-${tenant}-${i}`), i])
            await client.query('COMMIT')
          } finally {
            client.release()
          }
          const seen = await pool.query<Row>(`SELECT tenant_id, body FROM ${table} WHERE body LIKE $1`, [
            tag('pgb-%'),
          ])
          for (const r of seen.rows) {
            if (r.tenant_id !== tenant) errors.push(`${tenant} saw ${r.tenant_id}`)
            if (r.body.endsWith(`dropped-${run}`)) errors.push(`${tenant} kept a rolled-back savepoint`)
          }
        })
      }
      await Promise.all(Array.from({ length: 40 }, (_, i) => request(i)))
      expect(errors).toEqual([])
      const both = await Promise.all(
        ['pgb_a', 'pgb_b'].map((t) => bodies(bounced.tenant(t), tag('pgb-%')).then((b) => b.length)),
      )
      expect(both).toEqual([20, 20])
    } finally {
      await bounced.close()
    }
  })
})
