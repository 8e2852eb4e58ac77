import express from 'express'
import pg from 'pg'
import { z } from 'zod'

/**
 * The load baseline: the same three routes as a typical app writes them on raw pg. One pool on the
 * primary, tenant filtering by hand in every WHERE clause (no RLS: it connects as a role that bypasses
 * it), no replicas, no cache. Not an example to follow: it is what keel is measured against.
 */
export function buildRawApp(
  superUrl: string,
  poolMax = 20,
): { app: express.Express; close(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: superUrl, max: poolMax })
  const app = express()
  app.disable('x-powered-by')
  // A load generator stops mid-request: let handlers still running finish before the pool ends.
  let inFlight = 0
  const tracked =
    (handler: (req: express.Request, res: express.Response) => Promise<void>) =>
    async (req: express.Request, res: express.Response) => {
      inFlight++
      try {
        await handler(req, res)
      } finally {
        inFlight--
      }
    }
  const close = async () => {
    while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 10))
    await pool.end()
  }
  app.use(express.json({ limit: '1mb' }))
  const tenantOf = (req: express.Request): string => {
    const id = req.get('x-tenant-id')
    if (id === undefined || !/^[a-z0-9-]{1,63}$/.test(id))
      throw Object.assign(new Error('tenant'), { status: 400 })
    return id
  }
  app.get(
    '/api/dashboard',
    tracked(async (req, res) => {
      const tenant = tenantOf(req)
      const totals = await pool.query(
        `SELECT count(*)::int AS invoices,
              coalesce(sum(amount_cents) FILTER (WHERE status = 'open'), 0)::float8 AS "openCents",
              coalesce(sum(amount_cents) FILTER (WHERE status = 'paid'), 0)::float8 AS "paidCents"
         FROM invoices WHERE tenant_id = $1`,
        [tenant],
      )
      const top = await pool.query(
        `SELECT customer, sum(amount_cents)::float8 AS "totalCents" FROM invoices
        WHERE tenant_id = $1 AND status <> 'void' GROUP BY customer ORDER BY 2 DESC LIMIT 5`,
        [tenant],
      )
      res.json({ ...totals.rows[0], topCustomers: top.rows, computedAt: new Date().toISOString() })
    }),
  )
  app.get(
    '/api/invoices',
    tracked(async (req, res) => {
      const tenant = tenantOf(req)
      const limit = z.coerce.number().int().min(1).max(200).default(50).parse(req.query.limit)
      const r = await pool.query(
        `SELECT id::text, number, customer, amount_cents::float8 AS "amountCents", status,
              to_char(issued_on, 'YYYY-MM-DD') AS "issuedOn", created_at AS "createdAt"
         FROM invoices WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`,
        [tenant, limit],
      )
      res.json({ invoices: r.rows })
    }),
  )
  return { app, close }
}
