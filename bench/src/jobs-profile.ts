/**
 * Where keel's enqueue time goes: runs one focused enqueue loop per variant (raw BullMQ `Queue.add`,
 * two round trips by hand (keel's fallback), keel `db.enqueue`, keel with an idempotencyKey; the same code as
 * bench/dist/jobs.js) in a child process under `node --cpu-prof`, 32 enqueues in flight, then prints
 * per enqueue the CPU time of each package and of the functions that matter (sampled every 100 µs,
 * the measured window only), then times keel's per-call pieces apart, and writes
 * bench/results/jobs-profile.md. The .cpuprofile files are kept for Chrome DevTools or speedscope.
 *
 *   node bench/dist/jobs-profile.js
 *
 * Environment: BENCH_PROFILE_JOBS (20000 per loop), BENCH_JOBS_IN_FLIGHT (32), KEEL_STACK_FILE,
 * BENCH_RESULTS_DIR. Needs the stack's Redis; every queue it makes is obliterated.
 */
import { spawn } from 'node:child_process'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { analyzeProfile, type CpuProfile, type ProfileSummary } from './lib/cpu-profile.js'
import { envNumber } from './lib/env.js'
import { JOB_NAME, payloadFor, payloadSchema, producerRedis } from './lib/jobs-common.js'
import { drive, dropQueue, ENQUEUE_VARIANTS, FAIR_PRIORITY, tenantIds } from './lib/jobs-runners.js'
import { fmt, markdownTable } from './lib/report.js'
import { runMain } from './lib/run-main.js'
import { readStack, repoRoot } from './lib/stack.js'

const jobs = Math.round(envNumber('BENCH_PROFILE_JOBS', 20_000))
const inFlight = Math.round(envNumber('BENCH_JOBS_IN_FLIGHT', 32))
const INTERVAL_US = 100
const LOOPS = ['raw', 'by-hand', 'keel', 'keel-idem'] as const
type Loop = (typeof LOOPS)[number]

// ------------------------------------------------------------------------------------- the loop (child)

interface LoopOutput {
  jobs: number
  elapsedMs: number
  cpuUs: number
  startUs: number
  endUs: number
}

async function runLoop(loop: Loop): Promise<void> {
  const stack = readStack()
  const ctx = { redisUrl: stack.redis!.url, primaryUrl: stack.primary.url }
  const variant = ENQUEUE_VARIANTS.find((v) => v.key === loop)!
  const admin = producerRedis(ctx.redisUrl)
  const tag = randomBytes(4).toString('hex')
  // Warm (compiled) on a queue of its own before the measured window, which the analysis cuts out.
  const warmName = `kjp${tag}.warm`
  const warm = variant.setup(ctx, warmName, 0)
  await drive(warm, 0, 5_000, inFlight)
  await warm.close()
  await dropQueue(admin, warmName)
  const name = `kjp${tag}.${loop}`
  const runner = variant.setup(ctx, name, 1)
  await drive(runner, 0, 200, inFlight) // connections and scripts loaded
  const cpu = process.cpuUsage()
  const startUs = Number(process.hrtime.bigint() / 1000n)
  const run = await drive(runner, 200, jobs, inFlight)
  const endUs = Number(process.hrtime.bigint() / 1000n)
  const used = process.cpuUsage(cpu)
  await runner.close()
  await dropQueue(admin, name)
  await admin.quit()
  if (run.errors > 0) throw new Error(`${run.errors} enqueues failed: ${run.firstError}`)
  const out: LoopOutput = {
    jobs,
    elapsedMs: run.elapsedMs,
    cpuUs: used.user + used.system,
    startUs,
    endUs,
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

// ----------------------------------------------------------------------------------- analysis (parent)

interface Profiled {
  loop: Loop
  out: LoopOutput
  summary: ProfileSummary
  file: string
}

async function profileLoop(loop: Loop): Promise<Profiled> {
  const dir = mkdtempSync(join(os.tmpdir(), `keel-jobs-profile-${loop}-`))
  const script = fileURLToPath(import.meta.url)
  const child = spawn(
    process.execPath,
    ['--cpu-prof', `--cpu-prof-interval=${INTERVAL_US}`, `--cpu-prof-dir=${dir}`, script, 'run', loop],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let text = ''
  child.stdout.on('data', (chunk: Buffer) => {
    text += chunk.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  if (code !== 0) throw new Error(`profiled ${loop} loop exited with code ${code}`)
  const out = JSON.parse(text.trim().split('\n').at(-1)!) as LoopOutput
  const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))!)
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  return { loop, out, summary: analyzeProfile(profile, out.startUs, out.endUs), file }
}

const LABEL: Record<Loop, string> = {
  raw: 'raw `Queue.add`',
  'by-hand': 'by hand (script + add)',
  keel: 'keel `db.enqueue`',
  'keel-idem': 'keel + idempotencyKey',
}

function packageTable(all: Profiled[]): string {
  const per = (p: Profiled, us: number) => us / p.out.jobs
  const names = new Set<string>()
  for (const p of all) for (const [name, us] of p.summary.packages) if (per(p, us) >= 0.3) names.add(name)
  const order = [...names].sort(
    (a, b) => (all.at(-1)!.summary.packages.get(b) ?? 0) - (all.at(-1)!.summary.packages.get(a) ?? 0),
  )
  const rows = order.map((name) => [
    name,
    ...all.map((p) => fmt(per(p, p.summary.packages.get(name) ?? 0), 1)),
  ])
  rows.push([
    '**all sampled (main thread, idle included)**',
    ...all.map((p) => fmt(per(p, p.summary.sampledUs), 1)),
  ])
  rows.push([
    '**on CPU, main thread (sampled − idle)**',
    ...all.map((p) => fmt(per(p, p.summary.sampledUs - p.summary.idleUs), 1)),
  ])
  rows.push([
    '**process CPU incl. GC and I/O threads (cpuUsage)**',
    ...all.map((p) => fmt(p.out.cpuUs / p.out.jobs, 1)),
  ])
  rows.push(['**wall time per enqueue**', ...all.map((p) => fmt((p.out.elapsedMs * 1_000) / p.out.jobs, 1))])
  return markdownTable(['self time by package, µs per enqueue', ...all.map((p) => LABEL[p.loop])], rows, [
    false,
    ...all.map(() => true),
  ])
}

function functionTable(p: Profiled, raw: Profiled | undefined): string {
  const per = (us: number) => us / p.out.jobs
  const rawTotal = new Map(raw?.summary.rows.map((r) => [r.name, r.totalUs / raw.out.jobs]) ?? [])
  const rows = p.summary.rows
    .filter((r) => !r.name.startsWith('(root)') && !r.name.startsWith('(program)'))
    .filter(
      (r) =>
        (r.name.includes('keel ') && per(r.totalUs) >= 0.3) || per(r.selfUs) >= 0.6 || per(r.totalUs) >= 3,
    )
    .sort((a, b) => b.totalUs - a.totalUs)
    .slice(0, 40)
  return markdownTable(
    ['function (file:line)', 'inclusive µs/enqueue', 'self µs/enqueue', 'raw `Queue.add` loop, inclusive'],
    rows.map((r) => [
      r.name,
      fmt(per(r.totalUs), 1),
      fmt(per(r.selfUs), 1),
      rawTotal.has(r.name) ? fmt(rawTotal.get(r.name), 1) : '—',
    ]),
    [false, true, true, true],
  )
}

// ------------------------------------------------------------------------------- components (parent)

const sink: unknown[] = [undefined]

/** µs per op: the median of 7 timed runs of `n` ops, after one untimed run. */
async function usPerOp(n: number, run: (n: number) => unknown): Promise<number> {
  const times: number[] = []
  for (let r = 0; r < 8; r++) {
    const t0 = performance.now()
    await run(n)
    if (r > 0) times.push(((performance.now() - t0) * 1e3) / n)
  }
  times.sort((a, b) => a - b)
  return times[times.length >> 1]!
}

interface RedisStats {
  cpuS: number
  scriptCalls: number
  scriptUsec: number
}

/** The server's CPU, and the calls and time spent inside EVALSHA/EVAL (INFO commandstats). */
async function redisStats(admin: Redis): Promise<RedisStats> {
  const info = `${await admin.info('commandstats')}\n${await admin.info('cpu')}`
  let scriptCalls = 0
  let scriptUsec = 0
  for (const m of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/g)) {
    scriptCalls += Number(m[1])
    scriptUsec += Number(m[2])
  }
  const cpu = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN)
  return { cpuS: cpu('used_cpu_user') + cpu('used_cpu_sys'), scriptCalls, scriptUsec }
}

interface Trip {
  wall: number
  cpu: number
  redisCpu: number
  /** Time Redis spent executing the scripts themselves, per call (commandstats usec). */
  inside: number
  scripts: number
}

/** `n` calls of `op` with `inFlight` callers: per call, wall, this process's CPU and Redis's. */
async function perCall(admin: Redis, n: number, op: (i: number) => Promise<unknown>): Promise<Trip> {
  const runner = { enqueue: op, close: async () => undefined }
  await drive(runner, 0, Math.min(n, 2_000), inFlight)
  const before = await redisStats(admin)
  const cpu = process.cpuUsage()
  const run = await drive(runner, 0, n, inFlight)
  const used = process.cpuUsage(cpu)
  const after = await redisStats(admin)
  if (run.errors > 0) throw new Error(`${run.errors} calls failed: ${run.firstError}`)
  return {
    wall: (run.elapsedMs * 1e3) / n,
    cpu: (used.user + used.system) / n,
    redisCpu: ((after.cpuS - before.cpuS) * 1e6) / n,
    inside: (after.scriptUsec - before.scriptUsec) / n,
    scripts: (after.scriptCalls - before.scriptCalls) / n,
  }
}

async function components(redisUrl: string, primaryUrl: string): Promise<string> {
  const rows: Array<[string, string]> = []
  const payload = payloadFor(7)
  rows.push([
    'zod `safeParse` of the payload (checkPayload)',
    fmt(
      await usPerOp(200_000, (n) => {
        for (let i = 0; i < n; i++) sink[0] = payloadSchema.safeParse(payload)
      }),
      3,
    ),
  ])
  rows.push([
    '`randomUUID()` (the job id without an idempotencyKey)',
    fmt(
      await usPerOp(200_000, (n) => {
        for (let i = 0; i < n; i++) sink[0] = randomUUID()
      }),
      3,
    ),
  ])
  rows.push([
    'sha256 of tenant + name + key (the job id with an idempotencyKey)',
    fmt(
      await usPerOp(100_000, (n) => {
        for (let i = 0; i < n; i++)
          sink[0] = createHash('sha256').update(`t01\u0000${JOB_NAME}\u0000invoice-${i}`).digest('hex')
      }),
      3,
    ),
  ])
  const envelope = { v: 1, t: 't01', p: payload, tc: {} }
  rows.push([
    "`JSON.stringify` of keel's envelope (BullMQ serializes the data)",
    fmt(
      await usPerOp(200_000, (n) => {
        for (let i = 0; i < n; i++) sink[0] = JSON.stringify(envelope)
      }),
      3,
    ),
  ])
  const cpuTable = markdownTable(
    ['piece (CPU only, median of 7 runs)', 'µs/op'],
    rows.map(([label, us]) => [label, us]),
    [false, true],
  )

  // The round trips on their own, 32 calls in flight, with Redis's side of each.
  const admin = producerRedis(redisUrl)
  const tag = randomBytes(4).toString('hex')
  const trips: Array<[string, Trip]> = []
  const n = 20_000
  const position = async (redis: Redis, label: string) => {
    const r = redis as Redis & { benchFair(a: string, b: string, max: number, ttl: number): Promise<number> }
    r.defineCommand('benchFair', { numberOfKeys: 2, lua: FAIR_PRIORITY })
    trips.push([
      label,
      await perCall(admin, n, (i) => {
        const tenant = tenantIds[i % tenantIds.length]!
        return r.benchFair(`kjp${tag}:pending:{${tenant}}`, `kjp${tag}:last:{${tenant}}`, 2 ** 17 - 1, 60_000)
      }),
    ])
    await redis.quit()
  }
  await position(
    producerRedis(redisUrl),
    "the position script alone (EVALSHA; the fallback's first round trip)",
  )
  const pipelined = new Redis(redisUrl, { maxRetriesPerRequest: 1, enableAutoPipelining: true })
  pipelined.on('error', () => undefined)
  await position(pipelined, 'the same with ioredis `enableAutoPipelining`')
  for (const key of ['raw', 'raw-priority', 'by-hand', 'keel'] as const) {
    const variant = ENQUEUE_VARIANTS.find((v) => v.key === key)!
    const name = `kjp${tag}.${key}`
    const runner = variant.setup({ redisUrl, primaryUrl }, name, 1)
    try {
      trips.push([variant.label, await perCall(admin, n, (i) => runner.enqueue(i))])
    } finally {
      await runner.close()
      await dropQueue(admin, name)
    }
  }
  const keys = await admin.keys(`kjp${tag}:*`)
  if (keys.length > 0) await admin.unlink(...keys)
  await admin.quit()
  const tripTable = markdownTable(
    [
      `${inFlight} calls in flight, ${n.toLocaleString('en-US')} calls`,
      'wall µs/call',
      'client CPU µs/call',
      'Redis CPU µs/call',
      'inside the scripts µs/call',
      'scripts/call',
    ],
    trips.map(([label, t]) => [
      label,
      fmt(t.wall, 1),
      fmt(t.cpu, 1),
      fmt(t.redisCpu, 1),
      fmt(t.inside, 1),
      fmt(t.scripts, 2),
    ]),
    [false, true, true, true, true, true],
  )
  return (
    `### The pieces, timed apart\n\n${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, in one process without the profiler.\n\n${cpuTable}\n\n` +
    "Round trips on their own (one run each, not interleaved: read the Redis columns, which the machine's load moves less than the wall time). " +
    "Redis CPU: the server's CPU time per call (INFO cpu: reading, parsing, running, replying); inside the scripts: the time Redis spent running the Lua itself (INFO commandstats usec of EVALSHA/EVAL). " +
    `Other clients of the shared Redis add to both.\n\n${tripTable}\n`
  )
}

async function main(): Promise<void> {
  if (process.argv[2] === 'run') {
    await runLoop(process.argv[3] as Loop)
    return
  }
  const stack = readStack()
  if (stack.redis === undefined) throw new Error('the stack has no Redis: run `node scripts/stack.mjs up`')
  const dir = process.env.BENCH_RESULTS_DIR ?? join(repoRoot, 'bench/results')
  mkdirSync(dir, { recursive: true })
  const profiled: Profiled[] = []
  for (const loop of LOOPS) {
    console.log(`profiling ${loop} …`)
    profiled.push(await profileLoop(loop))
  }
  const raw = profiled.find((p) => p.loop === 'raw')
  const keel = profiled.find((p) => p.loop === 'keel')!
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  const parts: string[] = []
  parts.push(
    `### CPU per enqueue, by package\n\n${date} UTC, Node ${process.version}, ${os.cpus().length} cores: ${jobs.toLocaleString('en-US')} enqueues per loop, ${inFlight} in flight, each loop in its own process after 5,000 warm-up enqueues. ` +
      `Self time sampled every ${INTERVAL_US} µs by \`node --cpu-prof\` on the main thread, the measured window only; "(garbage collector)" is V8's main-thread GC share. The profiler slows each loop alike: compare columns, not with jobs.js's unprofiled figures.\n\n` +
      packageTable(profiled),
  )
  parts.push(
    `### keel \`db.enqueue\`, by function\n\nInclusive = the function and everything it called, per enqueue; the last column is the same function in the raw \`Queue.add\` loop. Profiles: ${profiled.map((p) => p.file).join(', ')}\n\n${functionTable(keel, raw)}`,
  )
  parts.push(await components(stack.redis.url, stack.primary.url))
  for (const part of parts) console.log(`\n${part}`)
  const file = join(dir, 'jobs-profile.md')
  writeFileSync(
    file,
    `## Where keel's enqueue time goes\n\n\`node bench/dist/jobs-profile.js\`\n\n${parts.join('\n\n')}\n`,
  )
  console.log(`\nwrote ${file}`)
}

runMain(main)
