import {
  type ControlledTransaction,
  type Generated,
  Kysely,
  PostgresDialect,
  sql,
  type Transaction,
} from 'kysely'
import type pg from 'pg'
import type { OrmFixture, OrmStatements, OrmTransaction } from '../suite/orm-under-test.js'

/** The tables as Kysely types them: values are what pg's global type parsers return. */
export interface Database {
  orm_invoices: {
    tenant_id: string
    id: Generated<string>
    number: string
    amount: string
    issued_on: Date | string
    due_at: Date | string
    created_at: Generated<Date>
    big: Generated<string>
  }
  orm_payments: {
    tenant_id: string
    id: Generated<string>
    invoice_id: string
    amount: string
    paid_on: Date | string
    created_at: Generated<Date>
  }
}

type Db = Kysely<Database> | Transaction<Database>

function statements(db: Db): OrmStatements {
  return {
    invoices: () =>
      db.selectFrom('orm_invoices').select(['tenant_id as tenantId', 'number']).orderBy('id').execute(),
    insertInvoice: async (row) => {
      await db
        .insertInto('orm_invoices')
        .values({
          tenant_id: row.tenantId,
          number: row.number,
          amount: row.amount,
          issued_on: row.issuedOn,
          due_at: row.dueAt,
        })
        .execute()
    },
  }
}

let savepoints = 0

// Kysely's savepoints live on its controlled transactions (startTransaction()), not on transaction().
function controlled(trx: ControlledTransaction<Database, string[]>): OrmTransaction {
  return {
    ...statements(trx),
    savepoint: async (fn) => {
      const name = `sp${++savepoints}`
      const sp = await trx.savepoint(name).execute()
      try {
        await fn(controlled(sp))
        await sp.releaseSavepoint(name).execute()
      } catch (err) {
        await sp.rollbackToSavepoint(name).execute()
        throw err
      }
    },
    isolation: async () => {
      const { rows } = await sql<{
        level: string
      }>`SELECT current_setting('transaction_isolation') AS level`.execute(trx)
      return rows[0]!.level
    },
  }
}

/** Kysely over any pg.Pool: `new PostgresDialect({ pool })`. */
export const kyselyFixture: OrmFixture = {
  name: 'Kysely',
  open(pool: pg.Pool) {
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
    return {
      ...statements(db),
      transaction: async (fn, isolation) => {
        const begin = db.startTransaction()
        const trx = await (isolation ? begin.setIsolationLevel(isolation) : begin).execute()
        try {
          await fn(controlled(trx))
          await trx.commit().execute()
        } catch (err) {
          await trx.rollback().execute()
          throw err
        }
      },
      // Same-named columns need aliases in Kysely (its rows are objects): the test is that they stay apart.
      join: () =>
        db
          .selectFrom('orm_invoices as i')
          .innerJoin('orm_payments as p', (j) =>
            j.onRef('p.tenant_id', '=', 'i.tenant_id').onRef('p.invoice_id', '=', 'i.id'),
          )
          .select([
            'i.tenant_id',
            'i.id',
            'i.number',
            'i.amount',
            'i.issued_on',
            'i.due_at',
            'i.created_at',
            'i.big',
            'p.id as payment_id',
            'p.amount as payment_amount',
            'p.paid_on',
            'p.created_at as payment_created_at',
          ])
          .orderBy('i.id')
          .orderBy('p.id')
          .execute(),
      joinAmounts: (rows) =>
        (rows as Array<{ amount: string; payment_amount: string }>).map((r) => [r.amount, r.payment_amount]),
      // Kysely's destroy() ends the pool it was given: keel's pool is the app's to close.
      close: async () => {},
    }
  },
}
