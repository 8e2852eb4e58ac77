import type { Keel } from '@keel/core'
import { z } from 'zod'
import { parseCsv } from './csv.js'
import { defineExportJob } from './exports.js'
import { DASHBOARD_TAG } from './invoices.js'

/** The CSV columns an import accepts, in this order, with a header row. */
export const IMPORT_COLUMNS = ['number', 'customer', 'amount_cents', 'status', 'issued_on'] as const
const BATCH = 1_000

const importRow = z.tuple([
  z.string().min(1).max(40),
  z.string().min(1).max(200),
  z.coerce.number().int().min(0),
  z.enum(['open', 'paid', 'void']),
  z.iso.date(),
])

/**
 * Defined in every process that enqueues or runs them (the web app validates payloads at enqueue, the
 * worker runs them): keel refuses an unknown job name on both sides.
 */
export function defineAppJobs(keel: Keel): void {
  // "Download my data" as a job: the tenant's rows to a file, with progress (exports.ts).
  defineExportJob(keel)

  keel.defineJob('invoices.notify', {
    schema: z.strictObject({ invoiceId: z.string().regex(/^\d+$/) }),
    retries: 5,
    timeoutMs: 10_000,
    // Stands in for an email: reads the committed invoice (the job resumes the producer's position).
    handler: async ({ invoiceId }, { db }) => {
      const r = await db.query<{ number: string; customer: string }>(
        'SELECT number, customer FROM invoices WHERE id = $1',
        [invoiceId],
      )
      if (r.rowCount === 0) throw new Error(`invoice ${invoiceId} is not visible to its notify job`)
      return { notified: r.rows[0]!.customer, number: r.rows[0]!.number }
    },
  })

  keel.defineJob('invoices.import-csv', {
    schema: z.strictObject({ csv: z.string().min(1).max(5_000_000) }),
    retries: 3,
    timeoutMs: 120_000,
    handler: async ({ csv }, { db, job, signal }) => {
      const rows = parseCsv(csv)
      const header = rows.shift()?.map((h) => h.trim().toLowerCase())
      if (header?.join(',') !== IMPORT_COLUMNS.join(',')) {
        throw new Error(`the first row must be the header ${IMPORT_COLUMNS.join(',')}`)
      }
      const rejected: Array<{ line: number; reason: string }> = []
      const valid: Array<z.infer<typeof importRow>> = []
      rows.forEach((cells, i) => {
        const parsed = importRow.safeParse(cells.map((c) => c.trim()))
        if (parsed.success) valid.push(parsed.data)
        else if (rejected.length < 100)
          rejected.push({ line: i + 2, reason: parsed.error.issues[0]!.message })
      })
      let inserted = 0
      // One transaction per batch: a retried attempt skips what an earlier one committed.
      for (let at = 0; at < valid.length; at += BATCH) {
        const batch = valid.slice(at, at + BATCH)
        const r = await db.query(
          `INSERT INTO invoices (tenant_id, number, customer, amount_cents, status, issued_on)
           SELECT keel_current_tenant(), * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::date[])
           ON CONFLICT (tenant_id, number) DO NOTHING`,
          [0, 1, 2, 3, 4].map((col) => batch.map((row) => row[col])),
          { signal },
        )
        inserted += r.rowCount ?? 0
        await job.updateProgress(Math.round(((at + batch.length) / valid.length) * 100))
      }
      await db.invalidate({ tags: [DASHBOARD_TAG] })
      return { rows: rows.length, inserted, duplicates: valid.length - inserted, rejected }
    },
  })

  keel.defineJob('reports.monthly', {
    schema: z.strictObject({ year: z.number().int().min(2000).max(2100) }),
    retries: 2,
    timeoutMs: 60_000,
    handler: async ({ year }, { db, signal }) => {
      const r = await db.query<{ month: string; invoices: number; totalCents: number }>(
        `SELECT to_char(date_trunc('month', issued_on), 'YYYY-MM') AS month, count(*)::int AS invoices,
                sum(amount_cents)::float8 AS "totalCents"
           FROM invoices
          WHERE issued_on >= make_date($1, 1, 1) AND issued_on < make_date($1 + 1, 1, 1) AND status <> 'void'
          GROUP BY 1 ORDER BY 1`,
        [year],
        { signal },
      )
      return { year, months: r.rows }
    },
  })
}
