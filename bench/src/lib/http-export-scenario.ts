import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { envNumber } from './env.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './report.js'
import { readStack, repoRoot } from './stack.js'
import { median } from './stats.js'

/**
 * "What happens when megacorp downloads everything at peak": the example app (keel on Express) serving
 * the invoice list to the other tenants (autocannon, closed loop) without and with megacorp streaming
 * `GET /api/export` (db.export of its 120k invoices, ndjson) back to back, `DOWNLOADERS` at a time.
 * Alternating rounds; the others' p99 with the download over without.
 */
const SECONDS = envNumber('BENCH_HTTP_SECONDS', 8)
const CONNECTIONS = envNumber('BENCH_HTTP_EXPORT_CONNECTIONS', 8)
const ROUNDS = Math.round(envNumber('BENCH_HTTP_EXPORT_ROUNDS', 2))
const DOWNLOADERS = Math.round(envNumber('BENCH_HTTP_EXPORT_DOWNLOADERS', 1))
const OTHERS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark', 'wayne', 'wonka', 'tyrell']
const EXAMPLES = join(repoRoot, 'examples/dist')

export interface ExportScenarioPhase {
  downloads: boolean
  requestsPerSec: number
  p50Ms: number
  p99Ms: number
  errors: number
  non2xx: number
  downloadsCompleted: number
  downloadMB: number
  downloadFailures: number
}

/** One app's run: its export pace (undefined: unpaced), without and with the download. */
export interface ExportScenarioRun {
  pace: number | undefined
  phases: ExportScenarioPhase[]
  p99WithoutMs: number
  p99WithMs: number
  ratio: number
}

export interface ExportScenarioResults {
  seconds: number
  connections: number
  downloaders: number
  rounds: number
  runs: ExportScenarioRun[]
}

/** The example app's default pace (examples/src/app/exports.ts), and unpaced for comparison. */
const PACES = [0, Math.round(envNumber('BENCH_HTTP_EXPORT_PACE', 25_000))]

async function startServer(pace: number): Promise<{ port: number; child: ChildProcess }> {
  const stack = readStack()
  const env: Record<string, string> = {
    KEEL_PG_PRIMARY_URL: stack.primary.url,
    KEEL_PG_PRIMARY_OWNER_URL: stack.primary.ownerUrl,
    KEEL_PG_PRIMARY_SUPER_URL: stack.primary.superUrl,
    KEEL_REDIS_URL: stack.redis!.url,
    KEEL_EXAMPLE_EXPORT_ROWS_PER_SECOND: String(pace),
  }
  ;(stack.replicas ?? []).forEach((r, i) => {
    env[`KEEL_PG_REPLICA${i + 1}_URL`] = r.url
  })
  const child = fork(
    join(EXAMPLES, 'server.js'),
    ['--framework', 'express', '--port', '0', '--replicas', 'all'],
    {
      env: { ...process.env, ...env, OTEL_EXPORTER_OTLP_ENDPOINT: '' },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    },
  )
  const [message] = (await once(child, 'message')) as [{ listening: number }]
  return { port: message.listening, child }
}

function others(port: number, seconds: number): Promise<autocannon.Result> {
  let n = 0
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'GET',
        path: '/api/invoices?limit=20',
        setupRequest: (req) => ({
          ...req,
          headers: { ...req.headers, 'x-tenant-id': OTHERS[n++ % OTHERS.length]! },
        }),
      },
    ],
  })
}

/** megacorp downloading everything, back to back, until `stop()`; bytes are read and dropped. */
function downloader(port: number): {
  stop(): Promise<{ completed: number; bytes: number; failures: number }>
} {
  let stopped = false
  let completed = 0
  let bytes = 0
  let failures = 0
  const loop = async () => {
    while (!stopped) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/api/export`, {
          headers: { 'x-tenant-id': 'megacorp' },
        })
        if (res.status !== 200 || res.body === null) throw new Error(`status ${res.status}`)
        for await (const chunk of res.body) bytes += (chunk as Uint8Array).length
        completed++
      } catch {
        failures++
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  }
  const loops = Array.from({ length: DOWNLOADERS }, loop)
  return {
    stop: async () => {
      stopped = true
      await Promise.all(loops)
      return { completed, bytes, failures }
    },
  }
}

export async function runExportScenario(log: (line: string) => void): Promise<ExportScenarioResults> {
  const runs: ExportScenarioRun[] = []
  for (const pace of PACES) runs.push(await runWithPace(pace, log))
  return { seconds: SECONDS, connections: CONNECTIONS, downloaders: DOWNLOADERS, rounds: ROUNDS, runs }
}

async function runWithPace(pace: number, log: (line: string) => void): Promise<ExportScenarioRun> {
  const { port, child } = await startServer(pace)
  log(`  export scenario: the app ${pace === 0 ? 'unpaced' : `paced at ${fmtInt(pace)} rows/s`}`)
  const phases: ExportScenarioPhase[] = []
  try {
    await others(port, 3) // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const downloads of round % 2 === 0 ? [false, true] : [true, false]) {
        const d = downloads ? downloader(port) : undefined
        const r = await others(port, SECONDS)
        const got = (await d?.stop()) ?? { completed: 0, bytes: 0, failures: 0 }
        const phase: ExportScenarioPhase = {
          downloads,
          requestsPerSec: r.requests.average,
          p50Ms: r.latency.p50,
          p99Ms: r.latency.p99,
          errors: r.errors + r.timeouts,
          non2xx: r.non2xx,
          downloadsCompleted: got.completed,
          downloadMB: got.bytes / 2 ** 20,
          downloadFailures: got.failures,
        }
        phases.push(phase)
        log(
          `  export scenario round ${round + 1} ${downloads ? 'with megacorp downloading' : 'without         '}: ${fmtInt(phase.requestsPerSec)} req/s p50 ${fmt(phase.p50Ms, 1)} ms p99 ${fmt(phase.p99Ms, 1)} ms; downloads ${phase.downloadsCompleted} (${fmt(phase.downloadMB, 0)} MB), failures ${phase.downloadFailures}`,
        )
      }
    }
  } finally {
    if (child.exitCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    }
  }
  const p99WithoutMs = median(phases.filter((p) => !p.downloads).map((p) => p.p99Ms))
  const p99WithMs = median(phases.filter((p) => p.downloads).map((p) => p.p99Ms))
  return {
    pace: pace === 0 ? undefined : pace,
    phases,
    p99WithoutMs,
    p99WithMs,
    ratio: p99WithMs / p99WithoutMs,
  }
}

export function renderExportScenario(r: ExportScenarioResults): string {
  const paced = (run: ExportScenarioRun) =>
    run.pace === undefined ? 'unpaced' : `maxRowsPerSecond ${fmtInt(run.pace)}`
  const side = (run: ExportScenarioRun, downloads: boolean) => {
    const ps = run.phases.filter((p) => p.downloads === downloads)
    return [
      paced(run),
      downloads ? `with megacorp downloading (${r.downloaders} at a time)` : 'without',
      fmtInt(median(ps.map((p) => p.requestsPerSec))),
      fmt(median(ps.map((p) => p.p50Ms)), 1),
      fmt(median(ps.map((p) => p.p99Ms)), 1),
      downloads ? `**${fmtRatio(run.ratio)}**` : '',
      String(ps.reduce((n, p) => n + p.errors + p.non2xx, 0)),
      downloads ? String(ps.reduce((n, p) => n + p.downloadsCompleted, 0)) : '',
      downloads ? fmt(ps.reduce((n, p) => n + p.downloadMB, 0) / (ps.length * r.seconds), 1) : '',
    ]
  }
  return `"What happens when megacorp downloads everything at peak": the other tenants (${OTHERS.length}, rotating) load \`GET /api/invoices?limit=20\` with ${r.connections} connections (closed loop) without and with megacorp streaming \`GET /api/export\` (\`db.export\` of its tenant row and 120k invoices, ndjson, one REPEATABLE READ snapshot on a replica) back to back; ${r.rounds} alternating rounds of ${r.seconds} s, medians. Once with the example app's exports unpaced, once at its default pace (\`KEEL_EXAMPLE_EXPORT_ROWS_PER_SECOND\`).

${markdownTable(
  [
    'app export pace',
    'phase',
    'others req/s',
    'others p50 ms',
    'others p99 ms',
    'p99 with / without (goal <= 1.5x)',
    'errors + non-2xx',
    'downloads done',
    'download MB/s',
  ],
  r.runs.flatMap((run) => [side(run, false), side(run, true)]),
  [false, false, true, true, true, true, true, true, true],
)}
`
}
