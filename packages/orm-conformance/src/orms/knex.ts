import knexFactory, { type Knex } from 'knex'
import type pg from 'pg'
import type { OrmFixture, OrmStatements, OrmTransaction } from '../suite/orm-under-test.js'

type Db = Knex | Knex.Transaction

function statements(db: Db): OrmStatements {
  return {
    invoices: async () =>
      // A lazy builder: awaited here, inside the caller's keel.run, not by whoever awaits the result.
      await db('orm_invoices').select('tenant_id as tenantId', 'number').orderBy('id'),
    insertInvoice: async (row) => {
      await db('orm_invoices').insert({
        tenant_id: row.tenantId,
        number: row.number,
        amount: row.amount,
        issued_on: row.issuedOn,
        due_at: row.dueAt,
      })
    },
  }
}

function transaction(trx: Knex.Transaction): OrmTransaction {
  return {
    ...statements(trx),
    // A transaction() inside a Knex transaction is a SAVEPOINT.
    savepoint: async (fn) => {
      await trx.transaction((sp) => fn(transaction(sp)))
    },
    isolation: async () => {
      const { rows } = await trx.raw<{ rows: Array<{ level: string }> }>(
        "SELECT current_setting('transaction_isolation') AS level",
      )
      return rows[0]!.level
    },
  }
}

/**
 * Knex over any pg.Pool through its `connectionPool` option (Knex >= 3.2): Knex takes a client from the
 * pool for each query or transaction and gives it back, instead of opening connections of its own.
 */
export const knexFixture: OrmFixture = {
  name: 'Knex',
  open(pool: pg.Pool) {
    const db = knexFactory({ client: 'pg', connectionPool: pool } as Knex.Config)
    return {
      ...statements(db),
      transaction: async (fn, isolation) => {
        await db.transaction((trx) => fn(transaction(trx)), isolation ? { isolationLevel: isolation } : {})
      },
      join: async () =>
        await db('orm_invoices as i')
          .join('orm_payments as p', (j) => j.on('p.tenant_id', 'i.tenant_id').andOn('p.invoice_id', 'i.id'))
          .select(
            'i.*',
            'p.id as payment_id',
            'p.amount as payment_amount',
            'p.paid_on',
            'p.created_at as payment_created_at',
          )
          .orderBy([{ column: 'i.id' }, { column: 'p.id' }]),
      joinAmounts: (rows) =>
        (rows as Array<{ amount: string; payment_amount: string }>).map((r) => [r.amount, r.payment_amount]),
      // Knex does not end a pool it was given.
      close: () => db.destroy(),
    }
  },
}
