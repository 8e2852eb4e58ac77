import { createReadStream } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { exportJob, fileSink, type Keel, type TenantClient } from '@keel/core'

/** What "download my data" gives a tenant: its own rows of these tables (RLS picks the rows). */
export const EXPORT_TABLES = ['tenants', 'invoices'] as const
export const EXPORT_JOB = 'data.export'

/**
 * How fast "download my data" reads (db.export's maxRowsPerSecond), in the web app and the worker: an
 * unpaced export of a big tenant takes the CPU the other tenants' requests need (bench/results/
 * http-export.md). KEEL_EXAMPLE_EXPORT_ROWS_PER_SECOND sets it; 0 leaves exports unpaced.
 */
export function exportPace(): { maxRowsPerSecond?: number } {
  const asked = Number(process.env.KEEL_EXAMPLE_EXPORT_ROWS_PER_SECOND ?? 25_000)
  return Number.isFinite(asked) && asked > 0 ? { maxRowsPerSecond: asked } : {}
}

/**
 * Where the worker writes finished exports and the web app reads them back. One folder on one machine
 * for the example; in production the sink is an object-store upload (see the README's export section)
 * and the download route a signed URL.
 */
export function exportDir(): string {
  return process.env.KEEL_EXAMPLE_EXPORT_DIR ?? join(tmpdir(), 'keel-example-exports')
}

/** A tenant's folder of its own exports: the job id alone could name another tenant's file. */
function exportPath(tenantId: string, jobId: string): string {
  return join(exportDir(), tenantId, `${jobId.replace(/[^A-Za-z0-9_.-]/g, '_')}.ndjson`)
}

/** The export job: the tenant's tables into a file, restarted from scratch by a retry (ADR 0045). */
export function defineExportJob(keel: Keel): void {
  const file = fileSink(({ tenantId, jobId }) => exportPath(tenantId, jobId))
  keel.defineJob(
    EXPORT_JOB,
    exportJob({
      tables: [...EXPORT_TABLES],
      sink: async (context) => {
        await mkdir(join(exportDir(), context.tenantId), { recursive: true })
        return file(context)
      },
      retries: 2,
      timeoutMs: 30 * 60_000,
      ...exportPace(),
    }),
  )
}

/** A finished export's file, or undefined when the job is not this tenant's finished export. */
export async function exportFile(
  db: TenantClient,
  jobId: string,
): Promise<{ stream: Readable; bytes: number } | 'not-ready' | undefined> {
  // jobStatus is scoped to the tenant: another tenant's job id reads as absent.
  const status = await db.jobStatus(jobId)
  if (status === null || status.name !== EXPORT_JOB) return undefined
  if (status.state !== 'completed') return 'not-ready'
  const path = exportPath(db.tenantId, jobId)
  const { size } = await stat(path)
  return { stream: createReadStream(path), bytes: size }
}
