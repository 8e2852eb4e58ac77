/**
 * The README's first command: seeds the example SaaS app, starts it on Express with a job worker, walks
 * a scripted scenario over HTTP and prints one request's trace as a tree. Spans are exported over
 * OTLP/HTTP to a receiver this script runs (set OTEL_EXPORTER_OTLP_ENDPOINT to use your own backend).
 */
import { IMPORT_COLUMNS } from './app/app-jobs.js'
import { prepareExampleData } from './app/prepare-data.js'
import { SEED_TENANTS } from './app/seed-data.js'
import { apiClient } from './demo/api-client.js'
import { type Child, startChild } from './demo/children.js'
import { demoUrls } from './stack-urls.js'
import { OtlpReceiver, type ReceivedSpan } from './telemetry/otlp-receiver.js'
import { renderTraceTree } from './telemetry/trace-tree.js'

const bold = (s: string) => `\x1b[1m${s}\x1b[0m`
const dim = (s: string) => `\x1b[2m${s}\x1b[0m`
const green = (s: string) => `\x1b[32m${s}\x1b[0m`
const say = (s = '') => process.stdout.write(`${s}\n`)
const step = (title: string) => say(`\n${bold(`▸ ${title}`)}`)
const ms = (n: number) => `${n.toFixed(1)} ms`

interface Invoice {
  id: string
  number: string
  customer: string
}
interface JobStatus {
  state: string
  attempts: number
  progress: unknown
  result: unknown
  error: string | null
}

const children: Child[] = []
const receiver = new OtlpReceiver()

async function main(): Promise<void> {
  const externalOtlp = process.env.OTEL_EXPORTER_OTLP_ENDPOINT
  const otlp = await receiver.listen()
  const env = {
    // The app's spans go to the demo's receiver unless you named your own collector.
    OTEL_EXPORTER_OTLP_ENDPOINT: externalOtlp ?? otlp,
  }

  step('Seed: twenty tenants of very different sizes, under row-level security')
  const seeded = performance.now()
  // 'nosuch' too: the demo asks for it, and an earlier run cached that it does not exist.
  const invoiceCount = await prepareExampleData(demoUrls(), SEED_TENANTS, ['nosuch'])
  say(
    `  ${SEED_TENANTS.length} tenants, ${invoiceCount.toLocaleString('en')} invoices in ${((performance.now() - seeded) / 1000).toFixed(1)} s` +
      dim(`  (megacorp ${SEED_TENANTS[0]!.invoices.toLocaleString('en')}, acme 8,000, ..., newco 0)`),
  )

  step('Start the example: Express app + job worker (reads may use only the replica that replays 1.5 s late)')
  const [server, worker] = await Promise.all([
    startChild('server.js', ['--framework', 'express', '--port', '0', '--replicas', 'lagged'], env),
    startChild('worker.js', ['--replicas', 'lagged', '--concurrency', '4'], env),
  ])
  children.push(server, worker)
  const base = `http://127.0.0.1:${server.message.listening}`
  const api = apiClient(base)
  say(`  app on ${base}, worker ready; traces → ${externalOtlp ?? `${otlp} (the demo's OTLP/HTTP receiver)`}`)

  step('Tenant isolation: the same route, no tenant filter in the SQL, row-level security does it')
  for (const tenant of ['acme', 'globex']) {
    const r = await api<{ invoices: Invoice[] }>('GET', '/api/invoices?limit=3', { tenant })
    say(`  ${tenant.padEnd(7)} ${r.status}  ${r.body.invoices.map((i) => i.number).join(', ')}`)
  }
  for (const [label, tenant] of [
    ['no tenant header', undefined],
    ['hostile id "a;b"', 'a;b'],
    ['unknown tenant "nosuch"', 'nosuch'],
  ] as const) {
    const r = await api<{ error: { code: string } }>(
      'GET',
      '/api/invoices',
      tenant === undefined ? {} : { tenant },
    )
    say(`  ${label.padEnd(24)} → ${r.status} ${r.body?.error?.code ?? JSON.stringify(r.body)}`)
  }

  step('A read goes to a replica')
  const read = await api<{ invoices: Invoice[] }>('GET', '/api/invoices?limit=5', { tenant: 'acme' })
  const readSpans = await receiver.waitFor(read.traceId!, (s) => s.attributes['keel.route'] !== undefined)
  const readDb = readSpans.find((s) => s.attributes['keel.route'] !== undefined)!
  say(
    `  GET /api/invoices → ${read.status} in ${ms(read.ms)}; its query ran on ${green(String(readDb.attributes['keel.route']))}` +
      ` (${readDb.attributes['keel.replica.name'] ?? 'primary'})`,
  )

  step('Read-your-writes across requests: POST an invoice, then list, with and without the token')
  const created = await api<{ invoice: Invoice }>('POST', '/api/invoices', {
    tenant: 'acme',
    body: { customer: 'Wile E. Coyote', amountCents: 129_900 },
  })
  const token = created.headers.get('keel-consistency')
  say(
    `  POST /api/invoices → ${created.status} ${created.body.invoice.number}; keel-consistency: ${dim(token ?? '(none)')}`,
  )
  const stale = await api<{ invoices: Invoice[] }>('GET', '/api/invoices?limit=5', { tenant: 'acme' })
  const fresh = await api<{ invoices: Invoice[] }>('GET', '/api/invoices?limit=5', {
    tenant: 'acme',
    headers: token === null ? {} : { 'keel-consistency': token },
  })
  const has = (r: typeof stale) => r.body.invoices.some((i) => i.id === created.body.invoice.id)
  const freshSpans = await receiver.waitFor(fresh.traceId!, (s) => s.attributes['keel.route'] !== undefined)
  const freshRoute = freshSpans.find((s) => s.attributes['keel.route'] !== undefined)!.attributes[
    'keel.route'
  ]
  say(`  without the header: new invoice listed? ${has(stale) ? 'yes' : 'no  (the replica is 1.5 s behind)'}`)
  const servedBy =
    freshRoute === 'replica'
      ? 'a replica that had replayed the write'
      : 'the primary: no replica had replayed the write yet'
  say(
    `  with the header:    new invoice listed? ${has(fresh) ? green('yes') : 'NO'}  (served by ${servedBy})`,
  )

  step("Cache: the dashboard aggregates all of a tenant's invoices; a miss, then hits")
  for (let i = 0; i < 3; i++) {
    const r = await api<{ invoices: number }>('GET', '/api/dashboard', { tenant: 'megacorp' })
    const spans = await receiver.waitFor(r.traceId!, (s) => s.attributes['keel.cache.result'] !== undefined)
    const result = spans.find((s) => s.attributes['keel.cache.result'] !== undefined)!.attributes[
      'keel.cache.result'
    ]
    say(
      `  megacorp dashboard: ${r.body.invoices.toLocaleString('en')} invoices in ${ms(r.ms).padStart(8)}  cache: ${result}`,
    )
  }

  step('A write invalidates the dashboard (tag), then 200 concurrent requests for it → one load')
  const write = await api('POST', '/api/invoices', {
    tenant: 'megacorp',
    body: { customer: 'Acme Rockets', amountCents: 99_00 },
  })
  say(`  POST /api/invoices (megacorp) → ${write.status}: the 'invoices' tag is bumped on every server`)
  // Open the 200 keep-alive connections first, so the burst arrives together rather than at connect pace.
  await Promise.all(Array.from({ length: 200 }, () => api('GET', '/healthz')))
  const burst = await Promise.all(
    Array.from({ length: 200 }, () => api('GET', '/api/dashboard', { tenant: 'megacorp' })),
  )
  const ok = burst.filter((r) => r.status === 200).length
  const traces = burst.map((r) => r.traceId).filter((t): t is string => t !== undefined)
  // Each request makes two cache lookups (the tenant check, then the dashboard): the dashboard's is the later one.
  const isLookup = (s: ReceivedSpan) => s.attributes['keel.cache.result'] !== undefined
  await Promise.all(traces.map((t) => receiver.waitFor(t, isLookup, 2)))
  const dashboardResults = countBy(
    traces.map(
      (t) =>
        receiver
          .trace(t)
          .filter(isLookup)
          .sort((a, b) => (a.startNs < b.startNs ? -1 : 1))[1]!,
    ),
    (s) => String(s.attributes['keel.cache.result']),
  )
  const loads = traces
    .flatMap((t) => receiver.trace(t))
    .filter((s) => String(s.attributes['db.query.text'] ?? '').includes('count(')).length
  say(
    `  ${ok}/200 answered 200; the dashboard lookups: ${JSON.stringify(dashboardResults)}; aggregate queries run: ${green(String(loads))}`,
  )
  say(
    dim(
      '  (across servers the same holds: a Redis lock elects one loader, the others are told over pub/sub)',
    ),
  )

  step(
    'Jobs: a CSV import is offloaded (202 + job id), a retry with the same Idempotency-Key is the same job',
  )
  const csv = importCsv(1_000)
  // One key per demo run: the same key within jobs.retentionMs (24 h) is the same job, also a finished one.
  const uploadKey = `upload-${Date.now().toString(36)}`
  const upload = await api<{ jobId: string }>('POST', '/api/imports', {
    tenant: 'acme',
    csv,
    headers: { 'idempotency-key': uploadKey, 'keel-consistency': token ?? '' },
  })
  const retry = await api<{ jobId: string }>('POST', '/api/imports', {
    tenant: 'acme',
    csv,
    headers: { 'idempotency-key': uploadKey },
  })
  say(
    `  POST /api/imports → ${upload.status} ${upload.body.jobId} in ${ms(upload.ms)}; retried upload → ${retry.body.jobId}`,
  )
  const imported = await pollJob(api, 'acme', upload.body.jobId)
  say(`  job ${imported.state} after ${imported.attempts} attempt(s): ${JSON.stringify(imported.result)}`)
  const other = await api('GET', `/api/jobs/${upload.body.jobId}`, { tenant: 'globex' })
  say(`  globex asking for acme's job → ${other.status}`)

  step('Jobs: a report for the enterprise tenant runs in the worker, not in the request')
  const report = await api<{ jobId: string }>('POST', '/api/reports', {
    tenant: 'megacorp',
    body: { year: new Date().getUTCFullYear() },
  })
  const done = await pollJob(api, 'megacorp', report.body.jobId)
  const months = (done.result as { months: Array<{ month: string; invoices: number }> }).months
  say(
    `  POST /api/reports → ${report.status} in ${ms(report.ms)}; job ${done.state}: ${months.length} months, ` +
      `${months.reduce((n, m) => n + m.invoices, 0).toLocaleString('en')} invoices`,
  )

  step(
    "The trace of the CSV upload: HTTP span → enqueue (producer) → the worker's attempt (consumer) → its SQL",
  )
  const uploadTrace = await receiver.waitFor(upload.traceId!, (s) => s.kind === 5 && s.endNs > 0n)
  await receiver.waitFor(upload.traceId!, (s) => s.service.includes('worker') && s.kind === 3)
  say(indent(renderTraceTree(collapse(uploadTrace))))

  step('The trace of the invoice POST: one transaction, the outbox row, the notify job after COMMIT')
  await receiver.waitFor(created.traceId!, (s) => s.kind === 5)
  say(indent(renderTraceTree(collapse(receiver.trace(created.traceId!)))))
  say(
    dim(
      `\n  ${receiver.spans.length} spans received over OTLP/HTTP. To send them to Jaeger instead: ` +
        'OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 npm run demo',
    ),
  )
}

function countBy<T>(items: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}

function importCsv(rows: number): string {
  const lines = [IMPORT_COLUMNS.join(',')]
  for (let i = 1; i <= rows; i++) {
    lines.push(
      `IMP-${String(i).padStart(5, '0')},"Importer ${i % 17}, Ltd",${500 + i * 3},open,2026-11-${String(1 + (i % 27)).padStart(2, '0')}`,
    )
  }
  return `${lines.join('\n')}\n`
}

async function pollJob(api: ReturnType<typeof apiClient>, tenant: string, jobId: string): Promise<JobStatus> {
  const deadline = Date.now() + 60_000
  for (;;) {
    const r = await api<JobStatus>('GET', `/api/jobs/${jobId}`, { tenant })
    if (r.body.state === 'completed' || r.body.state === 'failed') return r.body
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${r.body.state} after 60 s`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** A long import makes one span per batch; keep the tree readable by folding repeats of a sibling. */
function collapse(spans: ReceivedSpan[]): ReceivedSpan[] {
  const seen = new Map<string, number>()
  return spans.filter((s) => {
    const key = `${s.parentSpanId}|${s.name}`
    const n = (seen.get(key) ?? 0) + 1
    seen.set(key, n)
    return n <= 3
  })
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')
}

try {
  await main()
} finally {
  await Promise.all(children.map((c) => c.stop()))
  await receiver.close()
}
