import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Keel, KeelError } from '../src/index.js'
import { ScopedQuery } from '../src/pool/scoped-query.js'
import { RlsStrategy } from '../src/tenancy/rls-strategy.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'

const table = 'rls_basic'
let keel: Keel

beforeAll(async () => {
  await createRlsTable(table)
  keel = testKeel({ pool: { max: 2 } })
})

afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

describe('rls mode', () => {
  it('scopes reads and writes to the tenant', async () => {
    const acme = keel.tenant('acme')
    const globex = keel.tenant('globex')
    await acme.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, ['acme', 'a1'])
    await globex.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, ['globex', 'g1'])
    const a = await acme.query<{ tenant_id: string; body: string }>(`SELECT tenant_id, body FROM ${table}`)
    const g = await globex.query<{ tenant_id: string }>(`SELECT tenant_id FROM ${table}`)
    expect(a.rows).toEqual([{ tenant_id: 'acme', body: 'a1' }])
    expect(g.rows.map((r) => r.tenant_id)).toEqual(['globex'])
  })

  it("refuses to write another tenant's row (WITH CHECK)", async () => {
    const acme = keel.tenant('acme')
    await expect(
      acme.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'forged')`),
    ).rejects.toMatchObject({ code: '42501' })
    const updated = await acme.query(`UPDATE ${table} SET body = 'x' WHERE tenant_id = 'globex'`)
    expect(updated.rowCount).toBe(0)
  })

  it.each([0, 16])(
    'leaves nothing on the connection: the setting is gone after each statement and each error (statement cache %i)',
    async (cacheSize) => {
      const raw = await connect('app')
      const scope = new RlsStrategy('app.tenant_id').scope('acme', 1_000)
      const send = (sql: string, values?: unknown[]) =>
        new Promise((resolve, reject) => {
          const q = new ScopedQuery(sql, values, [scope], cacheSize)
          q.callback = (err, res) => (err ? reject(err) : resolve(res))
          raw.query(q as never)
        })
      const settingOf = async () =>
        (
          await raw.query<{ t: string; s: string }>(
            "SELECT current_setting('app.tenant_id', true) AS t, current_setting('statement_timeout') AS s",
          )
        ).rows[0]
      try {
        expect(await send("SELECT current_setting('app.tenant_id', true) AS t")).toMatchObject({
          rows: [{ t: 'acme' }],
        })
        expect(await settingOf()).toEqual({ t: '', s: '0' })
        await expect(send('SELECT 1/0')).rejects.toMatchObject({ code: '22012' })
        expect(await settingOf()).toEqual({ t: '', s: '0' })
        await expect(send('SELECT pg_sleep(5)')).rejects.toMatchObject({ code: '57014' })
        expect(await settingOf()).toEqual({ t: '', s: '0' })
        await expect(send('SELEC nonsense')).rejects.toMatchObject({ code: '42601' })
        expect(await settingOf()).toEqual({ t: '', s: '0' })
        expect(raw.getTransactionStatus()).toBe('I')
      } finally {
        await raw.end()
      }
    },
  )

  it('fails closed: the runtime role without a tenant sees no rows and cannot write', async () => {
    const app = await connect('app')
    try {
      expect((await app.query(`SELECT * FROM ${table}`)).rowCount).toBe(0)
      await expect(app.query(`INSERT INTO ${table} (tenant_id) VALUES ('acme')`)).rejects.toMatchObject({
        code: '42501',
      })
      // After a transaction-local set_config the setting reverts to '' (not unset): still nothing.
      await app.query(`SELECT set_config('app.tenant_id', 'acme', true)`)
      expect((await app.query(`SELECT * FROM ${table}`)).rowCount).toBe(0)
    } finally {
      await app.end()
    }
  })

  it('refuses a superuser runtime role with KEEL_RLS_BYPASS', async () => {
    const unsafe = testKeel({ connectionString: readStack().primary.superUrl })
    try {
      await expect(unsafe.tenant('acme').query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_RLS_BYPASS' })
    } finally {
      await unsafe.close()
    }
  })

  it('rejects transaction control in db.query', async () => {
    for (const sql of [
      'BEGIN',
      'commit',
      '  ROLLBACK',
      'SAVEPOINT a',
      'DISCARD ALL',
      'start transaction',
      'SET search_path TO public',
      'set role postgres',
      'SET SESSION statement_timeout = 0',
      'RESET ALL',
      'reset statement_timeout',
    ]) {
      await expect(keel.tenant('acme').query(sql)).rejects.toMatchObject({ code: 'KEEL_QUERY_INVALID' })
    }
    await expect(keel.tenant('acme').query('')).rejects.toBeInstanceOf(KeelError)
    await expect(keel.tenant('acme').query('SELECT $1::int', 'x' as never)).rejects.toMatchObject({
      code: 'KEEL_QUERY_INVALID',
    })
  })

  it('allows transaction-scoped SET inside a transaction', async () => {
    const seen = await keel.tenant('acme').transaction(async (tx) => {
      await tx.query("SET LOCAL statement_timeout = '123ms'")
      await expect(tx.query('SET statement_timeout = 0')).rejects.toMatchObject({
        code: 'KEEL_QUERY_INVALID',
      })
      return (await tx.query<{ s: string }>("SELECT current_setting('statement_timeout') AS s")).rows[0]?.s
    })
    expect(seen).toBe('123ms')
  })

  it('returns pg result shapes: rows, rowCount, command, fields', async () => {
    const r = await keel.tenant('acme').query<{ n: number }>('SELECT 1::int AS n')
    expect(r.rows).toEqual([{ n: 1 }])
    expect(r.command).toBe('SELECT')
    expect(r.rowCount).toBe(1)
    expect(r.fields[0]?.name).toBe('n')
  })
})

describe('transactions', () => {
  it('commits on success, with the scope across every statement', async () => {
    const db = keel.tenant('tx_ok')
    const seen = await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('tx_ok', 'one')`)
      await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('tx_ok', 'two')`)
      const r = await tx.query<{ t: string }>(`SELECT current_setting('app.tenant_id', true) AS t`)
      return r.rows[0]?.t
    })
    expect(seen).toBe('tx_ok')
    expect((await db.query(`SELECT 1 FROM ${table}`)).rowCount).toBe(2)
  })

  it('rolls back when the callback throws', async () => {
    const db = keel.tenant('tx_rb')
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id) VALUES ('tx_rb')`)
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    expect((await db.query(`SELECT 1 FROM ${table}`)).rowCount).toBe(0)
  })

  it('refuses to commit after a swallowed statement error (KEEL_TRANSACTION_ABORTED)', async () => {
    const db = keel.tenant('tx_ab')
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id) VALUES ('tx_ab')`)
        await tx.query('SELECT 1/0').catch(() => undefined)
      }),
    ).rejects.toMatchObject({ code: 'KEEL_TRANSACTION_ABORTED' })
    expect((await db.query(`SELECT 1 FROM ${table}`)).rowCount).toBe(0)
  })

  it('supports savepoints through nested transaction()', async () => {
    const db = keel.tenant('tx_sp')
    await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('tx_sp', 'kept')`)
      await expect(
        tx.transaction(async (inner) => {
          await inner.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('tx_sp', 'dropped')`)
          throw new Error('inner')
        }),
      ).rejects.toThrow('inner')
    })
    const r = await db.query<{ body: string }>(`SELECT body FROM ${table}`)
    expect(r.rows.map((x) => x.body)).toEqual(['kept'])
  })

  it('closes the handle after the transaction (KEEL_TRANSACTION_CLOSED)', async () => {
    let leaked: { query(sql: string): Promise<unknown> } | undefined
    await keel.tenant('acme').transaction(async (tx) => {
      leaked = tx
    })
    await expect(leaked!.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_TRANSACTION_CLOSED' })
  })

  it('honours isolation level and read only', async () => {
    const db = keel.tenant('acme')
    const level = await db.transaction(
      async (tx) =>
        (await tx.query<{ l: string }>("SELECT current_setting('transaction_isolation') AS l")).rows[0]?.l,
      { isolationLevel: 'serializable', readOnly: true },
    )
    expect(level).toBe('serializable')
    await expect(
      db.transaction((tx) => tx.query(`INSERT INTO ${table} (tenant_id) VALUES ('acme')`), {
        readOnly: true,
      }),
    ).rejects.toMatchObject({ code: '25006' })
  })
})
