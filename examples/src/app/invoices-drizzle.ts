import type { TenantClient } from '@keel/core'
import { desc, sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { bigint, date, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core'
import type { Invoice } from './invoices.js'

/** The invoices table as Drizzle maps it (migrate.ts creates it; RLS scopes it to the tenant). */
export const invoices = pgTable(
  'invoices',
  {
    tenantId: text('tenant_id').notNull(),
    id: bigint('id', { mode: 'bigint' }).generatedAlwaysAsIdentity(),
    number: text('number').notNull(),
    customer: text('customer').notNull(),
    amountCents: bigint('amount_cents', { mode: 'number' }).notNull(),
    status: text('status', { enum: ['open', 'paid', 'void'] }).notNull(),
    issuedOn: date('issued_on').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] })],
)

/**
 * listInvoices (invoices.ts) written with Drizzle instead of SQL text: the same rows, the same routing
 * (a read: a replica that has this session's writes). `db.pgPool()` is a pg.Pool scoped to the request's
 * tenant, so Drizzle runs on keel unchanged; no tenant filter here either.
 */
export async function listInvoicesDrizzle(db: TenantClient, limit: number): Promise<Invoice[]> {
  const orm = drizzle({ client: db.pgPool() })
  const rows = await orm
    .select({
      id: sql<string>`${invoices.id}::text`,
      number: invoices.number,
      customer: invoices.customer,
      amountCents: invoices.amountCents,
      status: invoices.status,
      issuedOn: invoices.issuedOn,
      createdAt: invoices.createdAt,
    })
    .from(invoices)
    .orderBy(desc(invoices.createdAt), desc(invoices.id))
    .limit(limit)
  // As the SQL route's rows serialize: a timestamptz is a Date, sent as its ISO string.
  return rows.map((r) => ({ ...r, createdAt: r.createdAt.toISOString() }))
}
