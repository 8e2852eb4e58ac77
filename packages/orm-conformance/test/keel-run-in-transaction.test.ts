import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drizzleFixture } from '../src/orms/drizzle.js'
import type { OrmUnderTest } from '../src/suite/orm-under-test.js'
import { ormKeel } from '../src/support/keel.js'
import { allRows, createOrmTables } from '../src/support/schema.js'

// Found by the ORM suite (issue #12; /work/notes/i12-bugs.md): code below a handler often enters
// keel.run(db, fn) again with the db it was given (a helper, a library hook, a nested handler). Inside
// db.transaction(cb) of that same db, keel.run(db, fn) replaces the context entry { client: db, tx } with
// { client: db }: every statement below it, db.query's and an ORM's on keel.pgPool() alike, leaves the
// transaction and commits on its own while the transaction rolls back.
describe('keel.run(db) inside db.transaction of the same db', () => {
  const keel = ormKeel()
  let orm: OrmUnderTest
  beforeAll(async () => {
    await createOrmTables()
    orm = await drizzleFixture.open(keel.pgPool(), (fn) => fn())
  })
  afterAll(() => keel.close())

  it('keeps db.query and an ORM on keel.pgPool() in the transaction', async () => {
    const db = keel.tenant('acme')
    const row = (number: string) => ({
      tenantId: 'acme',
      number,
      amount: '1.00',
      issuedOn: '2024-01-01',
      dueAt: '2024-01-01 10:00:00',
    })
    await expect(
      db.transaction(async () => {
        await keel.run(db, () =>
          db.query(
            'INSERT INTO orm_invoices (tenant_id, number, amount, issued_on, due_at) VALUES ($1, $2, 1, now(), now())',
            ['acme', 'run-in-tx-sql'],
          ),
        )
        await keel.run(db, () => orm.insertInvoice(row('run-in-tx-orm')))
        throw new Error('roll everything back')
      }),
    ).rejects.toThrow('roll everything back')
    const committed = (await allRows('orm_invoices')).map((r) => r.number)
    expect(committed).not.toContain('run-in-tx-sql')
    expect(committed).not.toContain('run-in-tx-orm')
  })
})
