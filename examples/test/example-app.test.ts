import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { Keel } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IMPORT_COLUMNS } from '../src/app/app-jobs.js'
import { createAppKeel } from '../src/app/app-keel.js'
import { buildExpressApp } from '../src/app/express-app.js'
import { buildFastifyApp } from '../src/app/fastify-app.js'
import { prepareExampleData } from '../src/app/prepare-data.js'
import { apiClient } from '../src/demo/api-client.js'
import { demoUrls } from '../src/stack-urls.js'

// The example app is part of the product's promise: the same routes behave the same on both adapters,
// against the real stack (reads through the replica that replays 1.5 s late).
const urls = demoUrls()

describe.each(['express', 'fastify'] as const)('the example app on %s', (framework) => {
  let web: Keel
  let worker: Keel
  let close: () => Promise<void>
  let api: ReturnType<typeof apiClient>
  let base: string

  beforeAll(async () => {
    await prepareExampleData(urls, [
      { id: 'acme', name: 'Acme', plan: 'team', invoices: 300 },
      { id: 'globex', name: 'Globex', plan: 'team', invoices: 200 },
      { id: 'newco', name: 'NewCo', plan: 'free', invoices: 0 },
    ])
    const queue = `example-test-${randomUUID().slice(0, 8)}`
    web = createAppKeel(urls, { replicas: 'lagged', queue })
    worker = createAppKeel(urls, { replicas: 'lagged', queue })
    await worker.startWorker({ concurrency: 4 }).waitUntilReady()
    if (framework === 'express') {
      const server = buildExpressApp(web).listen(0, '127.0.0.1')
      await new Promise((resolve) => server.once('listening', resolve))
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      api = apiClient(base)
      close = async () => {
        await new Promise((resolve) => server.close(resolve))
        await web.close()
      }
    } else {
      const app = await buildFastifyApp(web)
      await app.listen({ port: 0, host: '127.0.0.1' })
      base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
      api = apiClient(base)
      close = () => app.close()
    }
  })

  afterAll(async () => {
    await close?.()
    await worker?.close()
  })

  it("lists only the tenant's own invoices, with no tenant filter in the SQL", async () => {
    const acme = await api<{ invoices: Array<{ number: string }> }>('GET', '/api/invoices?limit=200', {
      tenant: 'acme',
    })
    const globex = await api<{ invoices: Array<{ number: string }> }>('GET', '/api/invoices?limit=200', {
      tenant: 'globex',
    })
    expect(acme.status).toBe(200)
    expect(acme.body.invoices).toHaveLength(200)
    expect(acme.body.invoices.every((i) => i.number.startsWith('ACME-'))).toBe(true)
    expect(globex.body.invoices.every((i) => i.number.startsWith('GLOBEX-'))).toBe(true)
  })

  it('serves the same list through Drizzle on db.pgPool() as through SQL text', async () => {
    const sqlText = await api<{ invoices: Array<{ number: string }> }>('GET', '/api/invoices?limit=25', {
      tenant: 'globex',
    })
    const drizzle = await api<{ invoices: Array<{ number: string }> }>(
      'GET',
      '/api/drizzle/invoices?limit=25',
      {
        tenant: 'globex',
      },
    )
    expect(drizzle.status).toBe(200)
    expect(drizzle.body.invoices).toHaveLength(25)
    expect(drizzle.body).toEqual(sqlText.body)
    expect(drizzle.body.invoices.every((i) => i.number.startsWith('GLOBEX-'))).toBe(true)
  })

  it('answers 400 for a missing or hostile tenant and 404 for an unknown one, as JSON with the code', async () => {
    const missing = await api<{ error: { code: string } }>('GET', '/api/invoices')
    const hostile = await api<{ error: { code: string } }>('GET', '/api/invoices', {
      tenant: "x'; DROP TABLE invoices; --",
    })
    const unknown = await api<{ error: { code: string } }>('GET', '/api/invoices', { tenant: 'nosuch' })
    expect([missing.status, hostile.status, unknown.status]).toEqual([400, 400, 404])
    expect(hostile.body.error.code).toBe('KEEL_TENANT_INVALID')
  })

  it('shows a new invoice in the next list and on the dashboard (read-your-writes, tag invalidation)', async () => {
    const before = await api<{ invoices: number }>('GET', '/api/dashboard', { tenant: 'acme' })
    const created = await api<{ invoice: { id: string } }>('POST', '/api/invoices', {
      tenant: 'acme',
      body: { customer: 'Road Runner', amountCents: 4_200 },
    })
    expect(created.status).toBe(201)
    const token = created.headers.get('keel-consistency')
    expect(token).toMatch(/^k1\./)
    const list = await api<{ invoices: Array<{ id: string }> }>('GET', '/api/invoices?limit=5', {
      tenant: 'acme',
      headers: { 'keel-consistency': token! },
    })
    expect(list.body.invoices.map((i) => i.id)).toContain(created.body.invoice.id)
    const after = await api<{ invoices: number }>('GET', '/api/dashboard', { tenant: 'acme' })
    expect(after.body.invoices).toBe(before.body.invoices + 1)
  })

  it('rejects a bad invoice and an empty upload with 400s', async () => {
    const bad = await api<{ error: { code: string } }>('POST', '/api/invoices', {
      tenant: 'acme',
      body: { customer: '', amountCents: -1 },
    })
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('VALIDATION_FAILED')
    const empty = await api<{ error: { code: string } }>('POST', '/api/imports', { tenant: 'acme', body: {} })
    expect(empty.status).toBe(400)
    expect(empty.body.error.code).toBe('VALIDATION_FAILED')
  })

  it('offloads a CSV import: 202, the same job for a retried upload, rows written by the worker', async () => {
    const rows = Array.from({ length: 250 }, (_, i) => `T-${i},"Cust, ${i % 7}",${100 + i},paid,2026-10-01`)
    const csv = [IMPORT_COLUMNS.join(','), ...rows, 'bad-row'].join('\n')
    const key = randomUUID()
    const first = await api<{ jobId: string }>('POST', '/api/imports', {
      tenant: 'newco',
      csv,
      headers: { 'idempotency-key': key },
    })
    const again = await api<{ jobId: string }>('POST', '/api/imports', {
      tenant: 'newco',
      csv,
      headers: { 'idempotency-key': key },
    })
    expect(first.status).toBe(202)
    expect(again.body.jobId).toBe(first.body.jobId)
    const status = await untilDone(api, 'newco', first.body.jobId)
    expect(status.state).toBe('completed')
    expect(status.result).toMatchObject({ rows: 251, inserted: 250, duplicates: 0 })
    expect((await api('GET', `/api/jobs/${first.body.jobId}`, { tenant: 'acme' })).status).toBe(404)
    const dashboard = await api<{ invoices: number }>('GET', '/api/dashboard', { tenant: 'newco' })
    expect(dashboard.body.invoices).toBe(250)
  })

  it("streams 'download my data': the tenant's rows only, ndjson or one table as csv", async () => {
    const count = await web
      .tenant('acme')
      .query<{ n: number }>('SELECT count(*)::int AS n FROM invoices', [], {
        consistency: 'strong',
      })
    // Without the writer's consistency token the export may come from the replica that replays 1.5 s
    // late: the invoice an earlier test wrote shows up once it has replayed.
    let got = await download(base, '/api/export', 'acme')
    for (let i = 0; i < 100 && ndjson(got.text).length !== count.rows[0]!.n + 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      got = await download(base, '/api/export', 'acme')
    }
    expect(got.status).toBe(200)
    expect(got.headers.get('content-type')).toMatch(/application\/x-ndjson/)
    expect(got.headers.get('content-disposition')).toMatch(/attachment; filename="?acme.ndjson"?/)
    const lines = ndjson(got.text)
    const tenants = lines.filter((l) => l.table === 'tenants')
    const invoices = lines.filter((l) => l.table === 'invoices')
    expect(tenants.map((l) => l.row.id)).toEqual(['acme'])
    expect(invoices).toHaveLength(count.rows[0]!.n)
    expect(invoices.every((l) => l.row.tenant_id === 'acme')).toBe(true)
    const csv = await download(base, '/api/export?format=csv&table=invoices', 'globex')
    expect(csv.status).toBe(200)
    const rows = csv.text.trimEnd().split('\n')
    expect(rows[0]).toMatch(/^tenant_id,id,number,/)
    expect(rows.slice(1).every((r) => r.startsWith('globex,'))).toBe(true)
    expect(rows.length - 1).toBe(200)
    const bad = await api<{ error: { code: string } }>('GET', '/api/export?format=csv&table=pg_authid', {
      tenant: 'acme',
    })
    expect(bad.status).toBe(400)
  })

  it('runs the export as a job: progress, then the file, for this tenant only', async () => {
    const started = await api<{ jobId: string; status: string; download: string }>('POST', '/api/exports', {
      tenant: 'globex',
    })
    expect(started.status).toBe(202)
    let status: { state: string; progress: { rows: number; percent: number | null } } | undefined
    for (let i = 0; i < 600 && status?.state !== 'completed'; i++) {
      const r = await api<typeof status>('GET', started.body.status, { tenant: 'globex' })
      status = r.body
      if (status?.state === 'failed') throw new Error(`export failed: ${JSON.stringify(status)}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    expect(status?.state).toBe('completed')
    expect(status?.progress).toMatchObject({ rows: 201, percent: 100 })
    const file = await download(base, started.body.download, 'globex')
    expect(file.status).toBe(200)
    const streamed = await download(base, '/api/export', 'globex')
    expect(
      ndjson(file.text)
        .map((l) => `${l.table}:${l.row.id}`)
        .sort(),
    ).toEqual(
      ndjson(streamed.text)
        .map((l) => `${l.table}:${l.row.id}`)
        .sort(),
    )
    // Another tenant sees neither the job nor its file.
    expect((await api('GET', started.body.status, { tenant: 'acme' })).status).toBe(404)
    expect((await download(base, started.body.download, 'acme')).status).toBe(404)
  })

  it('runs a monthly report as a job and returns its result through the status route', async () => {
    const report = await api<{ jobId: string }>('POST', '/api/reports', {
      tenant: 'globex',
      body: { year: 2026 },
    })
    expect(report.status).toBe(202)
    const status = await untilDone(api, 'globex', report.body.jobId)
    expect(status).toMatchObject({ state: 'completed', error: null })
    const months = (status.result as { months: Array<{ invoices: number }> }).months
    expect(months.length).toBeGreaterThan(0)
  })
})

type ExportLine = { table: string; row: { id: string; tenant_id?: string } }

async function download(base: string, path: string, tenant: string) {
  const res = await fetch(`${base}${path}`, { headers: { 'x-tenant-id': tenant } })
  return { status: res.status, headers: res.headers, text: await res.text() }
}

function ndjson(text: string): ExportLine[] {
  expect(text.endsWith('\n')).toBe(true)
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line) as ExportLine)
}

async function untilDone(api: ReturnType<typeof apiClient>, tenant: string, jobId: string) {
  for (let i = 0; i < 600; i++) {
    const r = await api<{ state: string; result: unknown; error: string | null }>(
      'GET',
      `/api/jobs/${jobId}`,
      { tenant },
    )
    if (r.body.state === 'completed' || r.body.state === 'failed') return r.body
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`job ${jobId} did not finish`)
}
