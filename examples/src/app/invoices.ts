import type { Queryable, TenantClient } from '@keel/core'
import { z } from 'zod'

/** The example's domain: plain functions over a tenant client, shared by the Express and Fastify apps. */

export interface Invoice {
  id: string
  number: string
  customer: string
  amountCents: number
  status: 'open' | 'paid' | 'void'
  issuedOn: string
  createdAt: string
}

export interface DashboardSummary {
  invoices: number
  openCents: number
  paidCents: number
  topCustomers: Array<{ customer: string; totalCents: number }>
  computedAt: string
}

/** Every write to invoices bumps this tag, so each server's cached dashboard reloads once. */
export const DASHBOARD_TAG = 'invoices'

export const newInvoiceSchema = z.strictObject({
  number: z.string().min(1).max(40).optional(),
  customer: z.string().min(1).max(200),
  amountCents: z.number().int().min(0).max(1_000_000_000),
  status: z.enum(['open', 'paid', 'void']).default('open'),
  issuedOn: z.iso.date().optional(),
})
export type NewInvoice = z.input<typeof newInvoiceSchema>

export const listQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
})

const INVOICE_COLUMNS = `id::text, number, customer, amount_cents::float8 AS "amountCents", status,
  to_char(issued_on, 'YYYY-MM-DD') AS "issuedOn", created_at AS "createdAt"`

/** Newest first. A read: keel sends it to a replica that has what this session wrote. */
export async function listInvoices(db: Queryable, limit: number): Promise<Invoice[]> {
  const r = await db.query<Invoice>(
    `SELECT ${INVOICE_COLUMNS} FROM invoices ORDER BY created_at DESC, id DESC LIMIT $1`,
    [limit],
  )
  return r.rows
}

/** Writes the invoice and, in the same transaction, the job that notifies the customer (outbox). */
export async function createInvoice(db: TenantClient, input: NewInvoice): Promise<Invoice> {
  const v = newInvoiceSchema.parse(input)
  const invoice = await db.transaction(async (tx) => {
    const r = await tx.query<Invoice>(
      `INSERT INTO invoices (tenant_id, number, customer, amount_cents, status, issued_on)
       VALUES (keel_current_tenant(), coalesce($1, 'INV-' || upper(substr(md5(random()::text), 1, 10))), $2, $3, $4,
               coalesce($5::date, current_date))
       RETURNING ${INVOICE_COLUMNS}`,
      [v.number ?? null, v.customer, v.amountCents, v.status, v.issuedOn ?? null],
    )
    const created = r.rows[0]!
    await tx.enqueue('invoices.notify', { invoiceId: created.id })
    return created
  })
  await db.invalidate({ tags: [DASHBOARD_TAG] })
  return invoice
}

/**
 * The expensive read every page load wants: aggregates over all of a tenant's invoices (120k rows for
 * the enterprise tenant). Cached per tenant; writes invalidate it by tag. The fill reads the primary:
 * a fill right after an invalidation (a job's import, another server's write) by a request that carries
 * no consistency token could otherwise cache a lagging replica's view for the whole TTL. Fills are rare,
 * so the primary barely notices.
 */
export function dashboardSummary(db: TenantClient): Promise<DashboardSummary> {
  return db.cached({ key: 'dashboard:summary', ttlMs: 30_000, tags: [DASHBOARD_TAG] }, async () => {
    const totals = await db.query<{ invoices: number; openCents: number; paidCents: number }>(
      `SELECT count(*)::int AS invoices,
              coalesce(sum(amount_cents) FILTER (WHERE status = 'open'), 0)::float8 AS "openCents",
              coalesce(sum(amount_cents) FILTER (WHERE status = 'paid'), 0)::float8 AS "paidCents"
         FROM invoices`,
      [],
      { consistency: 'strong' },
    )
    const top = await db.query<{ customer: string; totalCents: number }>(
      `SELECT customer, sum(amount_cents)::float8 AS "totalCents"
         FROM invoices WHERE status <> 'void'
        GROUP BY customer ORDER BY 2 DESC LIMIT 5`,
      [],
      { consistency: 'strong' },
    )
    return { ...totals.rows[0]!, topCustomers: top.rows, computedAt: new Date().toISOString() }
  })
}

export const TENANT_EXISTS_KEY = 'tenant:exists'

/** Whether the tenant exists (adapters answer 404 otherwise); cached, it is asked on every request. */
export function tenantExists(db: TenantClient): Promise<boolean> {
  return db.cached({ key: TENANT_EXISTS_KEY, ttlMs: 60_000 }, async () => {
    const r = await db.query('SELECT 1 FROM tenants')
    return r.rowCount === 1
  })
}
