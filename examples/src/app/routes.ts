import { once } from 'node:events'
import type { Readable } from 'node:stream'
import type { TenantClient } from '@keel/core'
import { trace } from '@opentelemetry/api'
import { ZodError, z } from 'zod'
import { EXPORT_JOB, EXPORT_TABLES, exportFile, exportPace } from './exports.js'
import { createInvoice, dashboardSummary, listInvoices, listQuerySchema } from './invoices.js'
import { listInvoicesDrizzle } from './invoices-drizzle.js'

/** What a route sees, whichever framework serves it. */
export interface RouteInput {
  db: TenantClient
  params: Record<string, string>
  query: unknown
  body: unknown
  header(name: string): string | undefined
}

export interface RouteOutput {
  status: number
  body: unknown
  /** A streamed body instead of JSON: the adapter pipes it to the response (backpressure, abort). */
  stream?: { body: Readable; contentType: string; filename: string; bytes?: number }
}

export interface AppRoute {
  method: 'GET' | 'POST'
  path: string
  run(input: RouteInput): Promise<RouteOutput>
}

const downloadSchema = z.union([
  z.strictObject({ format: z.literal('ndjson').default('ndjson') }),
  z.strictObject({ format: z.literal('csv'), table: z.enum(EXPORT_TABLES) }),
])
const notFound = {
  status: 404,
  body: { error: { code: 'NOT_FOUND', message: 'no such export for this tenant' } },
}

/**
 * Resolves once the export has its first rows (or ended): a failure to start (the tenant is busy, the
 * database is down) still answers as a JSON error, before any header of the download is sent.
 */
async function started(stream: Readable): Promise<void> {
  await once(stream, 'readable')
}

const reportSchema = z.strictObject({ year: z.number().int().min(2000).max(2100) })
/** What the client sent is checked here (400); keel checks the job's payload again at enqueue. */
const uploadSchema = z.string().min(1, 'the upload is empty')

/**
 * The example's HTTP surface, written once: the Express and Fastify apps only register these. Keel's
 * errors (bad tenant, busy tenant, invalid job payload) are left to the adapter's error mapping.
 */
export const appRoutes: readonly AppRoute[] = [
  {
    method: 'GET',
    path: '/api/dashboard',
    run: async ({ db }) => ({ status: 200, body: await dashboardSummary(db) }),
  },
  {
    method: 'GET',
    path: '/api/invoices',
    run: async ({ db, query }) => {
      const { limit } = listQuerySchema.parse(query ?? {})
      return { status: 200, body: { invoices: await listInvoices(db, limit) } }
    },
  },
  {
    method: 'GET',
    path: '/api/drizzle/invoices',
    // The same list through Drizzle on db.pgPool(): an ORM runs on keel unchanged.
    run: async ({ db, query }) => {
      const { limit } = listQuerySchema.parse(query ?? {})
      return { status: 200, body: { invoices: await listInvoicesDrizzle(db, limit) } }
    },
  },
  {
    method: 'POST',
    path: '/api/invoices',
    run: async ({ db, body }) => ({ status: 201, body: { invoice: await createInvoice(db, body as never) } }),
  },
  {
    method: 'POST',
    path: '/api/imports',
    // The upload is accepted at once; the rows are written by a worker (a retried upload with the same
    // Idempotency-Key is the same job, not a second import).
    run: async ({ db, body, header }) => {
      const csv = uploadSchema.parse(
        typeof body === 'string' ? body : (body as { csv?: unknown } | undefined)?.csv,
      )
      const key = header('idempotency-key')
      const { jobId } = await db.enqueue('invoices.import-csv', { csv }, key ? { idempotencyKey: key } : {})
      return { status: 202, body: { jobId, status: `/api/jobs/${jobId}` } }
    },
  },
  {
    method: 'POST',
    path: '/api/reports',
    run: async ({ db, body }) => {
      const { year } = reportSchema.parse(body ?? {})
      const { jobId } = await db.enqueue('reports.monthly', { year })
      return { status: 202, body: { jobId, status: `/api/jobs/${jobId}` } }
    },
  },
  {
    method: 'GET',
    path: '/api/export',
    // "Download my data", streamed: one snapshot of the tenant's rows, read as fast as the client takes
    // them up to the export pace (db.export; a client that disconnects ends the transaction).
    run: async ({ db, query }) => {
      const asked = downloadSchema.parse(query ?? {})
      const csv = asked.format === 'csv'
      const body = db.export(
        csv
          ? { tables: [asked.table], format: 'csv', ...exportPace() }
          : { tables: [...EXPORT_TABLES], format: 'ndjson', ...exportPace() },
      )
      await started(body)
      return {
        status: 200,
        body: undefined,
        stream: {
          body,
          contentType: csv ? 'text/csv; charset=utf-8' : 'application/x-ndjson',
          filename: `${db.tenantId}${csv ? `-${asked.table}.csv` : '.ndjson'}`,
        },
      }
    },
  },
  {
    method: 'POST',
    path: '/api/exports',
    // The same export as a job: for a tenant too big to download in one request.
    run: async ({ db, header }) => {
      const key = header('idempotency-key')
      const { jobId } = await db.enqueue(
        EXPORT_JOB,
        { tables: [...EXPORT_TABLES] },
        key ? { idempotencyKey: key } : {},
      )
      return {
        status: 202,
        body: { jobId, status: `/api/exports/${jobId}`, download: `/api/exports/${jobId}/file` },
      }
    },
  },
  {
    method: 'GET',
    path: '/api/exports/:id',
    // state and progress ({ rows, estimatedRows, percent, table, attempt }) of this tenant's export.
    run: async ({ db, params }) => {
      const status = await db.jobStatus(params.id ?? '')
      return status === null || status.name !== EXPORT_JOB ? notFound : { status: 200, body: status }
    },
  },
  {
    method: 'GET',
    path: '/api/exports/:id/file',
    run: async ({ db, params }) => {
      const file = await exportFile(db, params.id ?? '')
      if (file === undefined) return notFound
      if (file === 'not-ready') {
        return { status: 409, body: { error: { code: 'NOT_READY', message: 'the export has not finished' } } }
      }
      return {
        status: 200,
        body: undefined,
        stream: {
          body: file.stream,
          contentType: 'application/x-ndjson',
          filename: `${db.tenantId}.ndjson`,
          bytes: file.bytes,
        },
      }
    },
  },
  {
    method: 'GET',
    path: '/api/jobs/:id',
    run: async ({ db, params }) => {
      // Another tenant's job id reads as not found: jobStatus is scoped to the tenant.
      const status = await db.jobStatus(params.id ?? '')
      return status === null
        ? { status: 404, body: { error: { code: 'NOT_FOUND', message: 'no such job for this tenant' } } }
        : { status: 200, body: status }
    },
  },
]

/** Runs a route; a zod failure in the app's own input checks is the client's fault (400). */
export async function runRoute(route: AppRoute, input: RouteInput): Promise<RouteOutput> {
  try {
    return await route.run(input)
  } catch (error) {
    if (error instanceof ZodError) {
      return {
        status: 400,
        body: {
          error: {
            code: 'VALIDATION_FAILED',
            message: 'the request is invalid',
            issues: error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
          },
        },
      }
    }
    throw error
  }
}

/** The trace id of the request's span, so a client (the demo) can look its trace up. */
export function currentTraceId(): string | undefined {
  const span = trace.getActiveSpan()
  return span?.isRecording() ? span.spanContext().traceId : undefined
}
