import { and, asc, eq, sql } from 'drizzle-orm'
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres'
import { bigint, bigserial, date, numeric, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core'
import type pg from 'pg'
import type { OrmFixture, OrmStatements, OrmTransaction } from '../suite/orm-under-test.js'

export const invoices = pgTable(
  'orm_invoices',
  {
    tenantId: text('tenant_id').notNull(),
    id: bigserial('id', { mode: 'bigint' }),
    number: text('number').notNull(),
    amount: numeric('amount', { precision: 12, scale: 2 }).notNull(),
    // Drizzle's defaults: date as a string, timestamp and timestamptz as Date.
    issuedOn: date('issued_on').notNull(),
    dueAt: timestamp('due_at', { precision: 6 }).notNull(),
    createdAt: timestamp('created_at', { precision: 6, withTimezone: true }).notNull().defaultNow(),
    big: bigint('big', { mode: 'bigint' }).notNull().default(0n),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] })],
)

export const payments = pgTable(
  'orm_payments',
  {
    tenantId: text('tenant_id').notNull(),
    id: bigserial('id', { mode: 'bigint' }),
    invoiceId: bigint('invoice_id', { mode: 'bigint' }).notNull(),
    amount: numeric('amount', { precision: 12, scale: 2 }).notNull(),
    paidOn: date('paid_on', { mode: 'date' }).notNull(),
    createdAt: timestamp('created_at', { precision: 6, withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] })],
)

type Db = NodePgDatabase | Parameters<Parameters<NodePgDatabase['transaction']>[0]>[0]

function statements(db: Db): OrmStatements {
  return {
    invoices: async () =>
      // A lazy builder: awaited here, inside the caller's keel.run, not by whoever awaits the result.
      await db
        .select({ tenantId: invoices.tenantId, number: invoices.number })
        .from(invoices)
        .orderBy(asc(invoices.id)),
    insertInvoice: async (row) => {
      await db.insert(invoices).values({ ...row, dueAt: new Date(`${row.dueAt.replace(' ', 'T')}Z`) })
    },
  }
}

function transaction(db: Db): OrmTransaction {
  return {
    ...statements(db),
    // Drizzle's nested transaction() is a SAVEPOINT.
    savepoint: (fn) => db.transaction((sp) => fn(transaction(sp))),
    isolation: async () => {
      const { rows } = await db.execute<{ level: string }>(
        sql`SELECT current_setting('transaction_isolation') AS level`,
      )
      return rows[0]!.level
    },
  }
}

/** Drizzle over any pg.Pool: `drizzle({ client: pool })`, as its docs wire node-postgres. */
export const drizzleFixture: OrmFixture = {
  name: 'Drizzle',
  open(pool: pg.Pool) {
    const db = drizzle({ client: pool })
    return {
      ...statements(db),
      transaction: (fn, isolation) =>
        db.transaction((tx) => fn(transaction(tx)), isolation ? { isolationLevel: isolation } : undefined),
      // select({ a: table, b: table }) is the join Drizzle reads back as array rows (rowMode: 'array').
      join: async () =>
        await db
          .select({ invoice: invoices, payment: payments })
          .from(invoices)
          .innerJoin(
            payments,
            and(eq(payments.tenantId, invoices.tenantId), eq(payments.invoiceId, invoices.id)),
          )
          .orderBy(asc(invoices.id), asc(payments.id)),
      joinAmounts: (rows) =>
        (rows as Array<{ invoice: { amount: string }; payment: { amount: string } }>).map((r) => [
          r.invoice.amount,
          r.payment.amount,
        ]),
      close: async () => {},
    }
  },
}
