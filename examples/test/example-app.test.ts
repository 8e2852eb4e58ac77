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
      api = apiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
      close = async () => {
        await new Promise((resolve) => server.close(resolve))
        await web.close()
      }
    } else {
      const app = await buildFastifyApp(web)
      await app.listen({ port: 0, host: '127.0.0.1' })
      api = apiClient(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`)
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
