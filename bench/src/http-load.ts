/**
 * HTTP load on the example app (autocannon): keel on Express vs the same routes on raw pg, and "what if
 * every database call gets slower?": the same runs with a delay proxy in front of each Postgres server,
 * at 1x and 2x its delay. Prints and writes bench/results/http-load.{md,json}.
 *
 *   npm run bench -- http          (BENCH_HTTP_SECONDS, BENCH_HTTP_CONNECTIONS, BENCH_HTTP_DELAY_MS)
 */
import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { envNumber } from './lib/env.js'
import { renderExportScenario, runExportScenario } from './lib/http-export-scenario.js'
import { machineMeta } from './lib/machine.js'
import { type DelayProxy, startDelayProxy } from './lib/proxy.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack, repoRoot, withHostPort } from './lib/stack.js'

const SECONDS = envNumber('BENCH_HTTP_SECONDS', 8)
const CONNECTIONS = envNumber('BENCH_HTTP_CONNECTIONS', 32)
/** Added to each direction of every Postgres round trip in the "1x" runs; "2x" doubles it. */
const DELAY_MS = envNumber('BENCH_HTTP_DELAY_MS', 2)
/**
 * The latency runs keep this many requests in flight (closed loop), well below saturation, so p50/p99
 * are what a request waits for, not the queue of a saturated 2-core machine. (autocannon's fixed-rate
 * mode adds ~10 ms of its own pacing to every request here, which would hide a 4 ms difference.)
 */
const LATENCY_CONNECTIONS = envNumber('BENCH_HTTP_LATENCY_CONNECTIONS', 4)
const WARMUP_SECONDS = 3
/** Requests rotate over these tenants (the seed's: one enterprise, teams, a long tail). */
const TENANTS = [
  'megacorp',
  'acme',
  'globex',
  'initech',
  'umbrella',
  'hooli',
  'stark',
  'wayne',
  'wonka',
  'tyrell',
]
const EXAMPLES = join(repoRoot, 'examples/dist')

interface Run {
  app: 'keel' | 'raw'
  route: string
  latency: string
  /** Requests kept in flight. */
  connections: number
  requestsPerSec: number
  p50Ms: number
  p99Ms: number
  errors: number
  non2xx: number
}

async function startServer(
  framework: 'express' | 'raw',
  env: Record<string, string>,
): Promise<{ port: number; child: ChildProcess }> {
  const child = fork(
    join(EXAMPLES, 'server.js'),
    ['--framework', framework, '--port', '0', '--replicas', 'all'],
    {
      env: { ...process.env, ...env, OTEL_EXPORTER_OTLP_ENDPOINT: '' },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    },
  )
  const [message] = (await once(child, 'message')) as [{ listening: number }]
  return { port: message.listening, child }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  await exited
}

async function load(
  port: number,
  path: string,
  seconds: number,
  connections: number,
): Promise<autocannon.Result> {
  let n = 0
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections,
    duration: seconds,
    requests: [
      {
        method: 'GET',
        path,
        // Each request picks the next tenant, so caches and pools see many tenants, not one hot key.
        setupRequest: (req) => ({
          ...req,
          headers: { ...req.headers, 'x-tenant-id': TENANTS[n++ % TENANTS.length]! },
        }),
      },
    ],
  })
}

/** The URLs the example's processes should use: the stack's, or each server behind its own delay proxy. */
async function urlsFor(delayMs: number): Promise<{ env: Record<string, string>; proxies: DelayProxy[] }> {
  const stack = readStack()
  const nodes = [stack.primary, ...(stack.replicas ?? [])]
  const proxies =
    delayMs === 0 ? [] : await Promise.all(nodes.map((n) => startDelayProxy(n.host, n.port, delayMs)))
  const via = (url: string, i: number) =>
    delayMs === 0 ? url : withHostPort(url, '127.0.0.1', proxies[i]!.port)
  const env: Record<string, string> = {
    KEEL_PG_PRIMARY_URL: via(stack.primary.url, 0),
    KEEL_PG_PRIMARY_OWNER_URL: via(stack.primary.ownerUrl, 0),
    KEEL_PG_PRIMARY_SUPER_URL: via(stack.primary.superUrl, 0),
    KEEL_REDIS_URL: stack.redis!.url,
  }
  ;(stack.replicas ?? []).forEach((r, i) => {
    env[`KEEL_PG_REPLICA${i + 1}_URL`] = via(r.url, i + 1)
  })
  return { env, proxies }
}

async function seedOnce(): Promise<void> {
  const child = fork(join(EXAMPLES, 'seed.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const [code] = (await once(child, 'exit')) as [number]
  if (code !== 0) throw new Error(`seed failed (exit ${code})`)
}

async function measure(latency: string, delayMs: number, connections: number, runs: Run[]): Promise<void> {
  const { env, proxies } = await urlsFor(delayMs)
  try {
    for (const app of ['keel', 'raw'] as const) {
      const { port, child } = await startServer(app === 'keel' ? 'express' : 'raw', env)
      try {
        for (const route of ['/api/invoices?limit=20', '/api/dashboard']) {
          await load(port, route, WARMUP_SECONDS, connections) // warm-up: pools, statement caches, first cache fills
          const r = await load(port, route, SECONDS, connections)
          const run: Run = {
            app,
            route: route.replace('?limit=20', ''),
            latency,
            connections,
            requestsPerSec: r.requests.average,
            p50Ms: r.latency.p50,
            p99Ms: r.latency.p99,
            errors: r.errors + r.timeouts,
            non2xx: r.non2xx,
          }
          runs.push(run)
          process.stdout.write(
            `  ${latency.padEnd(9)} ${app.padEnd(5)} ${run.route.padEnd(15)} ${fmtInt(run.requestsPerSec).padStart(7)} req/s  p50 ${fmt(run.p50Ms, 1)} ms  p99 ${fmt(run.p99Ms, 1)} ms  errors ${run.errors}  non-2xx ${run.non2xx}\n`,
          )
        }
      } finally {
        await stop(child)
      }
    }
  } finally {
    await Promise.all(proxies.map((p) => p.stop()))
  }
}

async function main(): Promise<void> {
  process.stdout.write('HTTP load on the example app (keel on Express vs the same routes on raw pg)\n')
  await seedOnce()
  const runs: Run[] = []
  await measure('loopback', 0, CONNECTIONS, runs)
  await measure('1x delay', DELAY_MS, LATENCY_CONNECTIONS, runs)
  await measure('2x delay', DELAY_MS * 2, LATENCY_CONNECTIONS, runs)
  const exportScenario = await runExportScenario((line) => process.stdout.write(`${line}\n`))

  const find = (app: string, route: string, latency: string) =>
    runs.find((r) => r.app === app && r.route === route && r.latency === latency)
  const table = markdownTable(
    [
      'latency',
      'route',
      'keel req/s',
      'raw req/s',
      'keel/raw',
      'keel p99 ms',
      'raw p99 ms',
      'errors + non-2xx',
    ],
    runs
      .filter((r) => r.app === 'keel' && r.latency === 'loopback')
      .map((k) => {
        const raw = find('raw', k.route, k.latency)!
        return [
          k.latency,
          k.route,
          fmtInt(k.requestsPerSec),
          fmtInt(raw.requestsPerSec),
          fmtRatio(k.requestsPerSec / raw.requestsPerSec),
          fmt(k.p99Ms, 1),
          fmt(raw.p99Ms, 1),
          String(k.errors + k.non2xx + raw.errors + raw.non2xx),
        ]
      }),
    [false, false, true, true, true, true, true, true],
  )
  const doubling = markdownTable(
    [
      'route',
      'app',
      'p50 at 1x (ms)',
      'p99 at 1x (ms)',
      'p50 at 2x (ms)',
      'p99 at 2x (ms)',
      'p99 2x / 1x',
      'req/s 1x → 2x',
    ],
    runs
      .filter((r) => r.latency === '1x delay')
      .map((one) => {
        const two = find(one.app, one.route, '2x delay')!
        return [
          one.route,
          one.app,
          fmt(one.p50Ms, 1),
          fmt(one.p99Ms, 1),
          fmt(two.p50Ms, 1),
          fmt(two.p99Ms, 1),
          fmtRatio(two.p99Ms / one.p99Ms),
          `${fmtInt(one.requestsPerSec)} → ${fmtInt(two.requestsPerSec)}`,
        ]
      }),
    [false, false, true, true, true, true, true, true],
  )
  const meta = machineMeta()
  const markdown = `Measured ${meta.date.slice(0, 16).replace('T', ' ')} UTC on ${meta.cores} cores (${meta.cpuModel}), Node ${meta.node}; the app, autocannon, three Postgres servers and Redis share the machine. autocannon, ${SECONDS} s per row after an unrecorded ${WARMUP_SECONDS} s warm-up; requests rotate over ${TENANTS.length} seeded tenants (megacorp has 120k invoices). keel: the example app (\`examples/src/app/express-app.ts\`): RLS-scoped queries, reads on the two replicas, the dashboard cached per tenant. raw: the same routes on one \`pg.Pool\` on the primary, tenant filtered by hand in each WHERE, no cache (\`examples/src/app/raw-app.ts\`).

Throughput: ${CONNECTIONS} connections as fast as they go, on loopback.

${table}

What if every database call takes twice as long? Each Postgres server behind its own proxy adding ${DELAY_MS} ms each way to every round trip ("1x"), then ${DELAY_MS * 2} ms ("2x"), with ${LATENCY_CONNECTIONS} requests in flight (closed loop, below saturation: the latencies are what a request waits for, not a queue).

${doubling}

${renderExportScenario(exportScenario)}`
  const written = writeResults(
    'http-load',
    'HTTP load: the example app, keel vs raw pg',
    {
      meta,
      connections: CONNECTIONS,
      latencyConnections: LATENCY_CONNECTIONS,
      seconds: SECONDS,
      delayMs: DELAY_MS,
      runs,
      exportScenario,
    },
    markdown,
  )
  process.stdout.write(`\n${markdown}\nwrote ${written.join(', ')}\n`)
}

runMain(main)
