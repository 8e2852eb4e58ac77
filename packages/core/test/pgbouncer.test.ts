import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { Keel, Logger } from '../src/index.js'
import { statementName } from '../src/pool/statement-cache.js'
import { RlsStrategy } from '../src/tenancy/rls-strategy.js'
import { awaitOnReplicas, connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { pgbouncer, type StackPgBouncer } from './support/pgbouncer.js'
import { waitFor } from './support/wait.js'

/**
 * keel through a real PgBouncer 1.18 (Debian's) in transaction mode, in front of the stack's primary:
 * every transaction (and every db.query batch) may run on another server connection, shared with the
 * pool's other clients. Names prepared by one client are there for the next one.
 */
const table = 'pgb_items'
let plain: StackPgBouncer
let discardAll: StackPgBouncer
let prepared: StackPgBouncer

beforeAll(async () => {
  ;({ plain, discardAll, prepared } = await pgbouncer())
  await createRlsTable(table)
})
afterAll(() => dropTable(table))

interface Captured {
  logger: Logger
  warnings: Array<{ obj: Record<string, unknown>; msg: string | undefined }>
}

function capture(): Captured {
  const warnings: Captured['warnings'] = []
  const noop = () => undefined
  return {
    warnings,
    logger: {
      debug: noop,
      info: noop,
      error: noop,
      // Only this signal: killing server connections can also make the replica monitor warn.
      warn: (obj, msg) => {
        const o = obj as Record<string, unknown>
        if (o.signal === 'statement_cache_disabled') warnings.push({ obj: o, msg })
      },
    },
  }
}

/** Ends the server connections PgBouncer holds for `applicationName`: it opens fresh ones next. */
async function dropServerConnections(applicationName: string): Promise<void> {
  const su = await connect('super')
  try {
    await su.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
      [applicationName],
    )
    for (let i = 0; i < 100; i++) {
      const r = await su.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [applicationName],
      )
      if (r.rows[0].n === 0) return
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } finally {
    await su.end()
  }
}

/** Ends every server connection PgBouncer holds to the primary for the runtime role. */
async function dropAllServerConnections(): Promise<void> {
  const su = await connect('super')
  try {
    // PgBouncer's server connections come from 127.0.0.1 as keel_app; the test's own clients connect
    // directly and are not keel_app.
    const running = `FROM pg_stat_activity WHERE usename = 'keel_app' AND backend_type = 'client backend'`
    await su.query(`SELECT pg_terminate_backend(pid) ${running}`)
    // pg_terminate_backend only signals: wait until they are gone, so none is handed out again.
    for (let i = 0; i < 100; i++) {
      const r = await su.query(`SELECT count(*)::int AS n ${running}`)
      if (r.rows[0].n === 0) return
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } finally {
    await su.end()
  }
}

function bouncerKeel(
  bouncer: StackPgBouncer,
  applicationName: string,
  options: { max?: number; logger?: Logger; replicas?: Array<'replica1' | 'replica2'> } = {},
): Keel {
  return testKeel({
    connectionString: bouncer.url,
    applicationName,
    pool: { max: options.max ?? 2 },
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.replicas === undefined ? {} : { replicas: options.replicas, maxReplicaLagMs: 60_000 }),
  })
}

describe('statement names through PgBouncer >= 1.21 with max_prepared_statements (issue #17)', () => {
  // PgBouncer 1.24 (prepared) tracks each client's named statements and prepares them on whichever
  // server connection a transaction gets: keel keeps its statement cache on, with no fallback.
  it('server connections replaced between calls: every call right, names kept, no warning', async () => {
    expect(prepared.version).toBe('1.24.1')
    const { logger, warnings } = capture()
    const keel = bouncerKeel(prepared, 'keel-pgb121-drop', { max: 1, logger })
    try {
      const db = keel.tenant('acme')
      const sql = `SELECT $1::int + 121 AS v`
      for (let i = 0; i < 20; i++) {
        expect((await db.query<{ v: number }>(sql, [i])).rows[0]?.v).toBe(121 + i)
        await dropServerConnections('keel-pgb121-drop')
      }
      expect(warnings).toEqual([])
    } finally {
      await keel.close()
    }
  })

  it('two keel clients with the same statement names on shared server connections: no clash, no warning', async () => {
    const first = bouncerKeel(prepared, 'keel-pgb121-clash', { max: 1 })
    const { logger, warnings } = capture()
    const second = bouncerKeel(prepared, 'keel-pgb121-clash', { max: 1, logger })
    try {
      await dropAllServerConnections()
      const sql = `SELECT $1::int + 42 AS v, current_setting('app.tenant_id', true) AS tenant`
      for (let i = 0; i < 20; i++) {
        const [a, b] = await Promise.all([
          first.tenant('acme').query<{ v: number; tenant: string }>(sql, [i]),
          second.tenant('globex').query<{ v: number; tenant: string }>(sql, [i + 1]),
        ])
        expect(a.rows[0]).toEqual({ v: 42 + i, tenant: 'acme' })
        expect(b.rows[0]).toEqual({ v: 43 + i, tenant: 'globex' })
      }
      expect(warnings).toEqual([])
    } finally {
      await Promise.all([first.close(), second.close()])
    }
  })
})

describe('statement names through PgBouncer in transaction mode (issue #10 item 3)', () => {
  it('two keel clients interleaving different statements each get their own statement’s result', async () => {
    // Two processes' worth of keel (each its own client connections to PgBouncer), same statement
    // shapes with different texts: with per-connection counter names (keel_1, keel_2, ...) one client
    // bound the other's keel_1 on a shared server connection and got the other statement's result.
    const a = bouncerKeel(plain, 'keel-pgb-attack', { max: 3 })
    const b = bouncerKeel(plain, 'keel-pgb-attack', { max: 3 })
    const wrong: string[] = []
    const failed: string[] = []
    try {
      const call = async (keel: Keel, who: string, k: number, i: number) => {
        const arg = `${who}${i}`
        try {
          const r = await keel
            .tenant('acme')
            .query<{ arg: string; stmt: string }>(`SELECT $1::text AS arg, '${who}-${k}' AS stmt`, [arg])
          const row = r.rows[0]
          if (row?.stmt !== `${who}-${k}` || row.arg !== arg)
            wrong.push(`${who}-${k} got ${JSON.stringify(row)}`)
        } catch (error) {
          failed.push(`${who}-${k}: ${(error as { code?: string }).code} ${(error as Error).message}`)
        }
      }
      let i = 0
      const lane = async (keel: Keel, who: string, offset: number) => {
        for (let n = 0; n < 150; n++) await call(keel, who, (n + offset) % 6, i++)
      }
      await Promise.all([lane(a, 'A', 0), lane(b, 'B', 3), lane(a, 'A', 1), lane(b, 'B', 4)])
    } finally {
      await Promise.all([a.close(), b.close()])
    }
    expect(wrong.slice(0, 5)).toEqual([])
    expect(failed.slice(0, 5)).toEqual([])
  }, 60_000)

  it('a name missing on the new server connection (26000): the batch runs again unnamed, one warning', async () => {
    const { logger, warnings } = capture()
    const keel = bouncerKeel(plain, 'keel-pgb-26000', { max: 1, logger })
    try {
      await dropAllServerConnections()
      const db = keel.tenant('acme')
      const sql = `SELECT $1::int + 26000 AS v`
      expect((await db.query<{ v: number }>(sql, [1])).rows[0]?.v).toBe(26001)
      // PgBouncer opens a new server connection: keel's client connection believes the statement
      // (and its scope) prepared, the server process has never seen them.
      await dropServerConnections('keel-pgb-26000')
      expect((await db.query<{ v: number }>(sql, [2])).rows[0]?.v).toBe(26002)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]?.obj).toMatchObject({ signal: 'statement_cache_disabled', err: { code: '26000' } })
      // From now on nothing is named on this host: no more failures, no more warnings.
      for (let i = 0; i < 20; i++) {
        await dropServerConnections('keel-pgb-26000')
        expect((await db.query<{ v: number }>(sql, [i])).rows[0]?.v).toBe(26000 + i)
      }
      expect(warnings).toHaveLength(1)
    } finally {
      await keel.close()
    }
  })

  it('a name already taken on the server connection (42P05): the batch runs again unnamed, one warning', async () => {
    const first = bouncerKeel(plain, 'keel-pgb-42P05', { max: 1 })
    const { logger, warnings } = capture()
    const second = bouncerKeel(plain, 'keel-pgb-42P05', { max: 1, logger })
    try {
      await dropAllServerConnections()
      const sql = `SELECT $1::int + 42 AS v`
      // One server connection is left; PgBouncer reuses the most recently used one (LIFO), so the
      // second client's first batch lands where the first one prepared the same names.
      expect((await first.tenant('acme').query<{ v: number }>(sql, [1])).rows[0]?.v).toBe(43)
      expect((await second.tenant('globex').query<{ v: number }>(sql, [2])).rows[0]?.v).toBe(44)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]?.obj).toMatchObject({ signal: 'statement_cache_disabled', err: { code: '42P05' } })
      for (let i = 0; i < 20; i++) await second.tenant('globex').query(sql, [i])
      expect(warnings).toHaveLength(1)
    } finally {
      await Promise.all([first.close(), second.close()])
    }
  })

  it('prints nothing without a logger when it stops naming statements', async () => {
    const keel = bouncerKeel(plain, 'keel-pgb-silent', { max: 1 })
    const spies = [
      vi.spyOn(process.stderr, 'write'),
      vi.spyOn(process.stdout, 'write'),
      vi.spyOn(console, 'warn'),
      vi.spyOn(console, 'error'),
      vi.spyOn(console, 'log'),
    ]
    try {
      const db = keel.tenant('acme')
      await db.query('SELECT 1 AS silent')
      await dropServerConnections('keel-pgb-silent')
      await db.query('SELECT 1 AS silent')
      for (const spy of spies) expect(spy).not.toHaveBeenCalled()
    } finally {
      for (const spy of spies) spy.mockRestore()
      await keel.close()
    }
  })

  it('a write batch (BEGIN .. COMMIT, WAL position) that lost its statement after BEGIN ran commits exactly once', async () => {
    const { logger, warnings } = capture()
    // With a replica configured, a db.query write is BEGIN / scope / statement / COMMIT / position.
    const keel = bouncerKeel(plain, 'keel-pgb-write', { max: 1, logger, replicas: ['replica1'] })
    const other = bouncerKeel(plain, 'keel-pgb-write', { max: 1, replicas: ['replica1'] })
    const insert = `INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`
    try {
      const db = keel.tenant('write_once')
      await dropAllServerConnections()
      await db.query(insert, ['write_once', 'first']) // prepares BEGIN, scope, INSERT, COMMIT on S1
      await dropAllServerConnections()
      // The other client's write prepares BEGIN, the scope and COMMIT (same names: same texts) on S2,
      // not this INSERT. This client's next write lands there: BEGIN and the scope run, then the
      // INSERT's Bind fails with 26000 inside the batch's transaction, which must not commit.
      await other.tenant('write_other').query(`UPDATE ${table} SET n = n + 1 WHERE body = $1`, ['none'])
      await db.query(insert, ['write_once', 'second'])
      expect(warnings).toHaveLength(1)
      expect(warnings[0]?.obj).toMatchObject({ err: { code: '26000' } })
      const rows = await db.query<{ body: string }>(`SELECT body FROM ${table} ORDER BY id`, [], {
        route: 'primary',
      })
      expect(rows.rows.map((r) => r.body)).toEqual(['first', 'second'])
      expect(db.consistencyToken).toBeDefined()
    } finally {
      await Promise.all([keel.close(), other.close()])
    }
  })

  it('a write whose batch is whole on the server connection up to COMMIT commits once (nothing named after COMMIT)', async () => {
    const { logger, warnings } = capture()
    const keel = bouncerKeel(plain, 'keel-pgb-commit', { max: 1, logger, replicas: ['replica1'] })
    const insert = `INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`
    const scope = new RlsStrategy('app.tenant_id').scope('commit_probe', 30_000)
    const raw = new pg.Client({ connectionString: plain.url })
    try {
      const db = keel.tenant('commit_once')
      await dropAllServerConnections()
      await db.query(insert, ['commit_once', 'first'])
      await dropAllServerConnections()
      // Another client prepares, under keel's names, BEGIN, the scope, this INSERT and COMMIT on the
      // one server connection left, and nothing else. keel's next write binds all four there: if the
      // WAL position after COMMIT were named too, its Bind would fail after the commit, and sending the
      // batch again would insert the row twice.
      await raw.connect()
      for (const [text, values] of [
        ['BEGIN', []],
        [scope.text, scope.values],
        [insert, ['commit_probe', 'probe']],
        ['COMMIT', []],
      ] as const) {
        await raw.query({ name: statementName(text), text, values: [...values] })
      }
      await raw.end()
      await db.query(insert, ['commit_once', 'second'])
      const rows = await db.query<{ body: string }>(`SELECT body FROM ${table} ORDER BY id`, [], {
        route: 'primary',
      })
      expect(rows.rows.map((r) => r.body)).toEqual(['first', 'second'])
      expect(warnings).toEqual([])
    } finally {
      await raw.end().catch(() => undefined)
      await keel.close()
    }
  })

  it('a transaction whose first batch lost its names runs once; later statements never lose theirs', async () => {
    const { logger, warnings } = capture()
    const keel = bouncerKeel(plain, 'keel-pgb-tx', { max: 1, logger })
    try {
      const db = keel.tenant('tx_once')
      const body = async (label: string) =>
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, ['tx_once', label])
          await tx.query(`UPDATE ${table} SET n = n + 1 WHERE body = $1`, [label])
          return (await tx.query<{ n: number }>(`SELECT n FROM ${table} WHERE body = $1`, [label])).rows[0]?.n
        })
      expect(await body('one')).toBe(1)
      // Every server connection, not only this client's: an idle one another test of this file left
      // may hold the same statements (a name is its text's hash), and the next batch could land there.
      await dropAllServerConnections()
      expect(await body('two')).toBe(1)
      expect(warnings).toHaveLength(1)
      const rows = await db.query<{ body: string; n: number }>(`SELECT body, n FROM ${table} ORDER BY id`)
      expect(rows.rows).toEqual([
        { body: 'one', n: 1 },
        { body: 'two', n: 1 },
      ])
    } finally {
      await keel.close()
    }
  })

  it('inside a transaction, a statement this client prepared on another server connection is not bound by name', async () => {
    // Built step by step on PgBouncer's LIFO reuse of server connections: S1 and S2 both have the
    // scope and the first statement prepared, only S1 has the second one (prepared there by this
    // client). The next transaction's first batch runs on S2 and succeeds; naming the second statement
    // there would fail with 26000 inside the caller's transaction, where nothing can be sent again.
    const { logger, warnings } = capture()
    const keel = bouncerKeel(plain, 'keel-pgb-midtx', { max: 1, logger })
    const other = bouncerKeel(plain, 'keel-pgb-midtx', { max: 1 })
    const first = `SELECT count(*)::int AS c FROM ${table} WHERE body = $1`
    const second = `SELECT count(*)::int AS c FROM ${table} WHERE n = $1`
    const holder = new pg.Client({ connectionString: plain.url })
    try {
      await dropAllServerConnections()
      const db = keel.tenant('midtx')
      await db.query('SELECT 1') // on S1, the only server connection
      await db.transaction(async (tx) => {
        await tx.query(first, ['x']) // on S1
        await tx.query(second, [1]) // on S1
        // While S1 is held by this transaction, the other client (first contact: it names everything)
        // gets S2 and prepares the scope and `first` there. It ends first, so S1 is freed last.
        await other.tenant('midtx').transaction(async (o) => o.query(first, ['y']))
      })
      await holder.connect()
      await holder.query('BEGIN')
      await holder.query('SELECT 1') // holds S1
      const counts = await db.transaction(async (tx) => [
        (await tx.query<{ c: number }>(first, ['z'])).rows[0]?.c,
        (await tx.query<{ c: number }>(second, [2])).rows[0]?.c,
      ])
      expect(counts).toEqual([0, 0])
      expect(warnings).toEqual([])
    } finally {
      await holder.end().catch(() => undefined)
      await Promise.all([keel.close(), other.close()])
    }
  })

  it('concurrent transactions of several keel clients all commit, each exactly once', async () => {
    const keels = Array.from({ length: 3 }, () => bouncerKeel(plain, 'keel-pgb-txs', { max: 3 }))
    const tenants = ['tx_a', 'tx_b', 'tx_c']
    const perLane = 40
    try {
      await dropAllServerConnections()
      await Promise.all(
        keels.flatMap((keel, k) =>
          tenants.map(async (tenant) => {
            const db = keel.tenant(tenant)
            for (let i = 0; i < perLane; i++) {
              await db.transaction(async (tx) => {
                const label = `${tenant}:${k}:${i}`
                await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, [tenant, label])
                await tx.query(`UPDATE ${table} SET n = n + 1 WHERE body = $1`, [label])
                await tx.query(`SELECT count(*) FROM ${table} WHERE n > $1`, [i])
              })
            }
          }),
        ),
      )
      const owner = await connect('super')
      const r = await owner.query<{ tenant_id: string; rows: number; bad: number }>(
        `SELECT tenant_id, count(*)::int AS rows, count(*) FILTER (WHERE n <> 1 OR split_part(body, ':', 1) <> tenant_id)::int AS bad
         FROM ${table} WHERE tenant_id LIKE 'tx\\__' GROUP BY tenant_id ORDER BY tenant_id`,
      )
      await owner.end()
      expect(r.rows).toEqual(tenants.map((t) => ({ tenant_id: t, rows: keels.length * perLane, bad: 0 })))
    } finally {
      await Promise.all(keels.map((k) => k.close()))
    }
  }, 120_000)
})

describe('read-your-writes with the primary behind PgBouncer', () => {
  it('write-then-read cycles with a fast and a lagged replica: zero stale reads, replicas used', async () => {
    await awaitOnReplicas(table)
    const keel = bouncerKeel(plain, 'keel-pgb-ryw', { max: 4, replicas: ['replica1', 'replica2'] })
    try {
      await waitFor('replicas in rotation', async () =>
        (await keel.health()).replicas.every((r) => r.inRotation),
      )
      const db = keel.tenant('ryw_pgb')
      await db.query(`INSERT INTO ${table} (tenant_id, n) VALUES ($1, 0)`, ['ryw_pgb'])
      let stale = 0
      let onReplica = 0
      for (let v = 1; v <= 300; v++) {
        await db.query(`UPDATE ${table} SET n = $1`, [v])
        const row = (
          await db.query<{ v: number; r: boolean }>(`SELECT n AS v, pg_is_in_recovery() AS r FROM ${table}`)
        ).rows[0]!
        if (row.v !== v) stale++
        if (row.r) onReplica++
        // Now and then a pause, so replicas catch up and the session's reads may use them.
        if (v % 50 === 0) await new Promise((r) => setTimeout(r, 60))
      }
      expect(stale).toBe(0)
      expect(onReplica).toBeGreaterThan(0)
    } finally {
      await keel.close()
    }
  }, 60_000)
})

describe('session state under a transaction pooler (ADR 0023)', () => {
  /** A client of the pool leaves a temp table on its server connection and goes away. */
  async function leaveTempTable(bouncer: StackPgBouncer): Promise<void> {
    const client = new pg.Client({ connectionString: bouncer.url, application_name: 'keel-pgb-temp' })
    await client.connect()
    try {
      // One transaction: with server_reset_query_always the reset runs after each one.
      await client.query(
        `BEGIN; CREATE TEMP TABLE import_staging (tenant_id text, body text); INSERT INTO import_staging VALUES ('acme', 'staged'); COMMIT`,
      )
    } finally {
      await client.end()
    }
  }

  async function seenByAnother(bouncer: StackPgBouncer): Promise<boolean> {
    const keel = bouncerKeel(bouncer, 'keel-pgb-temp', { max: 1 })
    try {
      const r = await keel
        .tenant('globex')
        .query<{ seen: boolean }>(`SELECT to_regclass('pg_temp.import_staging') IS NOT NULL AS seen`)
      return r.rows[0]?.seen === true
    } finally {
      await keel.close()
    }
  }

  it('without a reset, a temp table left on a server connection is there for the next client (the check can fail)', async () => {
    await dropAllServerConnections()
    await leaveTempTable(plain)
    expect(await seenByAnother(plain)).toBe(true)
    await dropAllServerConnections()
  })

  it('with server_reset_query = DISCARD ALL and server_reset_query_always = 1, it is gone', async () => {
    await dropAllServerConnections()
    await leaveTempTable(discardAll)
    expect(await seenByAnother(discardAll)).toBe(false)
  })
})
