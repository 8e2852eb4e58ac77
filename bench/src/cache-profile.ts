/**
 * Where keel's cache time goes: runs one focused loop of `db.cached` (an L1 hit, or a Redis hit with
 * the L1 of one entry and two keys in turn, as bench/dist/cache.js measures them) in a child process
 * under `node --cpu-prof`, then prints, per call, the self and inclusive CPU time of the functions
 * that matter (sampled every 100 µs, the measured window only), then times the pieces of the hit paths
 * apart, and writes bench/results/cache-profile.md. The .cpuprofile file is kept for Chrome DevTools
 * or speedscope.
 *
 *   node bench/dist/cache-profile.js [l1|l2|all]
 *
 * Environment: BENCH_PROFILE_SECONDS (4), KEEL_STACK_FILE, BENCH_RESULTS_DIR. Needs the stack's Redis.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deserialize, serialize } from 'node:v8'
import { LRUCache } from 'lru-cache'
import {
  createKeelCache,
  dashboardValue,
  decodeEntryLikeKeel,
  deepFreezeLikeKeel,
  entryLikeKeel,
  freezeParsedLikeKeel,
  rawRedis,
  TTL_MS,
} from './lib/cache-common.js'
import { analyzeProfile, type CpuProfile } from './lib/cpu-profile.js'
import { envNumber } from './lib/env.js'
import { fmt, markdownTable } from './lib/report.js'
import { runMain } from './lib/run-main.js'
import { readStack, repoRoot } from './lib/stack.js'

const seconds = envNumber('BENCH_PROFILE_SECONDS', 4)
const INTERVAL_US = 100

type Loop = 'l1' | 'l2'

// ------------------------------------------------------------------------------------- the loop (child)

const sink: unknown[] = [undefined]

async function runLoop(loop: Loop): Promise<void> {
  const stack = readStack()
  const redisUrl = stack.redis!.url
  const prefix = `kp${process.pid}`
  const keel = createKeelCache({
    redisUrl,
    primaryUrl: stack.primary.url,
    prefix,
    ...(loop === 'l2' ? { l1MaxEntries: 1 } : {}),
  })
  const db = keel.tenant('t001')
  const loader = async () => dashboardValue()
  await db.cached({ key: 'dashboard-a', ttlMs: TTL_MS, tags: ['invoices'] }, loader)
  await db.cached({ key: 'dashboard-b', ttlMs: TTL_MS, tags: ['invoices'] }, loader)
  // Warm (compiled) before the measured window, which the analysis cuts out of the whole-process profile.
  for (let i = 0; i < 20_000; i++)
    sink[0] = await db.cached({ key: 'dashboard-a', ttlMs: TTL_MS, tags: ['invoices'] }, loader)
  let calls = 0
  const batch = loop === 'l1' ? 10_000 : 100
  const startUs = Number(process.hrtime.bigint() / 1000n)
  const until = performance.now() + seconds * 1_000
  const started = performance.now()
  while (performance.now() < until) {
    if (loop === 'l1') {
      for (let i = 0; i < batch; i++)
        sink[0] = await db.cached({ key: 'dashboard-a', ttlMs: TTL_MS, tags: ['invoices'] }, loader)
    } else {
      for (let i = 0; i < batch; i++)
        sink[0] = await db.cached(
          { key: i % 2 === 0 ? 'dashboard-a' : 'dashboard-b', ttlMs: TTL_MS, tags: ['invoices'] },
          loader,
        )
    }
    calls += batch
  }
  const elapsedMs = performance.now() - started
  const endUs = Number(process.hrtime.bigint() / 1000n)
  await keel.close()
  const admin = rawRedis(redisUrl)
  const keys = await admin.keys(`${prefix}*`)
  if (keys.length > 0) await admin.unlink(...keys)
  await admin.quit()
  process.stdout.write(`${JSON.stringify({ calls, elapsedMs, startUs, endUs })}\n`)
}

// ------------------------------------------------------------------------------- components (parent)

/** keel's deepFreeze before 4524d7c: every object walked with Reflect.ownKeys (array indices as strings). */
function freezeBefore4524d7c<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value
  if (ArrayBuffer.isView(value)) return value
  Object.freeze(value)
  for (const key of Reflect.ownKeys(value)) freezeBefore4524d7c((value as Record<PropertyKey, unknown>)[key])
  return value
}

/** ns per op: the median of 7 timed runs of `n` ops, after one untimed run. */
async function nsPerOp(n: number, run: (n: number) => unknown): Promise<number> {
  const times: number[] = []
  for (let r = 0; r < 8; r++) {
    const t0 = performance.now()
    await run(n)
    if (r > 0) times.push(((performance.now() - t0) * 1e6) / n)
  }
  times.sort((a, b) => a - b)
  return times[times.length >> 1]!
}

/**
 * The pieces of keel's hit paths timed apart, without the profiler: what each would save if removed.
 * Same value, same key shapes and lru-cache options as keel's L1 (packages/core/src/cache/l1-store.ts).
 */
async function components(): Promise<string> {
  const value = dashboardValue()
  const l1Options = {
    max: 10_000,
    maxSize: 64 * 1024 * 1024,
    sizeCalculation: () => 1,
  }
  const lru = new LRUCache<string, object>(l1Options)
  const where = { scope: 't:t001' }
  const literal = 't:t001\u0000dashboard'
  lru.set(literal, value, { size: 1_000 })
  const plainMap = new Map([[literal, value]])
  const entryBuf = entryLikeKeel(value, Date.now() + TTL_MS, ['0', '0'])
  const v8Buf = serialize(value)
  const json = JSON.stringify(value)
  const asyncIdentity = async (v: unknown) => v
  const rows: Array<[string, number]> = []
  rows.push([
    'lru-cache get, the same key string every call (its hash is cached)',
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = lru.get(literal)
    }),
  ])
  // Two equal keys V8 cannot tell apart at compile time, so the concatenation really runs per call, as
  // in keel (there the scope is a field and the key comes in a fresh options object).
  const keys = ['dashboard', ['dash', 'board'].join('')]
  rows.push([
    "lru-cache get, key built per call: scope + '\\u0000' + key (keel up to 4524d7c)",
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = lru.get(`${where.scope}\u0000${keys[i & 1]}`)
    }),
  ])
  // keel since 4524d7c: Map<scope, Map<key, composite>> then lru-cache get with the memoized composite.
  const memo = new Map([[where.scope, new Map([['dashboard', literal]])]])
  rows.push([
    "lru-cache get through keel's memoized key (two Map lookups, then the get; since 4524d7c)",
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = lru.get(memo.get(where.scope)!.get(keys[i & 1]!)!)
    }),
  ])
  rows.push([
    'building that key alone',
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = `${where.scope}\u0000${keys[i & 1]}`
    }),
  ])
  rows.push([
    'Map.get with that key built per call (no lru-cache)',
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = plainMap.get(`${where.scope}\u0000${keys[i & 1]}`)
    }),
  ])
  rows.push([
    'Date.now()',
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = Date.now()
    }),
  ])
  rows.push([
    'XFetch draw: Math.log(1 - Math.random())',
    await nsPerOp(1_000_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = Math.log(1 - Math.random())
    }),
  ])
  rows.push([
    '`await` of a plain value (what the raw lru-cache row awaits)',
    await nsPerOp(1_000_000, async (n) => {
      for (let i = 0; i < n; i++) sink[0] = await value
    }),
  ])
  rows.push([
    '`await` of an async function returning that value (one async layer)',
    await nsPerOp(1_000_000, async (n) => {
      for (let i = 0; i < n; i++) sink[0] = await asyncIdentity(value)
    }),
  ])
  rows.push([
    `JSON.parse of the value's JSON (${json.length} bytes)`,
    await nsPerOp(20_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = JSON.parse(json)
    }),
  ])
  const decode = await nsPerOp(20_000, (n) => {
    for (let i = 0; i < n; i++) sink[0] = decodeEntryLikeKeel(entryBuf)
  })
  rows.push([
    `keel's entry decode: header, counters, JSON.parse of the value (${entryBuf.length} bytes)`,
    decode,
  ])
  rows.push([
    `v8.deserialize of the value (${v8Buf.length} bytes; what a value that is not plain JSON costs instead)`,
    await nsPerOp(20_000, (n) => {
      for (let i = 0; i < n; i++) sink[0] = deserialize(v8Buf)
    }),
  ])
  const decodeFreeze = await nsPerOp(20_000, (n) => {
    for (let i = 0; i < n; i++) sink[0] = deepFreezeLikeKeel(decodeEntryLikeKeel(entryBuf).value)
  })
  rows.push([
    "keel's general deepFreeze of a freshly decoded value (decode + freeze − decode; loader values, V8 entries)",
    decodeFreeze - decode,
  ])
  const decodeParsed = await nsPerOp(20_000, (n) => {
    for (let i = 0; i < n; i++) sink[0] = freezeParsedLikeKeel(decodeEntryLikeKeel(entryBuf).value)
  })
  rows.push([
    "keel's freeze of a decoded JSON value, what a Redis hit runs since issue #11 (for-in walk, no checks)",
    decodeParsed - decode,
  ])
  const decodeOld = await nsPerOp(20_000, (n) => {
    for (let i = 0; i < n; i++) sink[0] = freezeBefore4524d7c(decodeEntryLikeKeel(entryBuf).value)
  })
  rows.push([
    'the deepFreeze keel had before 4524d7c (Reflect.ownKeys walk), for comparison',
    decodeOld - decode,
  ])
  const table = markdownTable(
    ['piece', 'ns/op'],
    rows.map(([label, ns]) => [label, fmt(ns, 0)]),
    [false, true],
  )
  return `### The pieces, timed apart\n\n${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, in one process without the profiler: median of 7 runs.\n\n${table}\n`
}

// ----------------------------------------------------------------------------------- analysis (parent)

async function profileLoop(loop: Loop): Promise<string> {
  const dir = mkdtempSync(join(os.tmpdir(), `keel-cache-profile-${loop}-`))
  const script = fileURLToPath(import.meta.url)
  const child = spawn(
    process.execPath,
    ['--cpu-prof', `--cpu-prof-interval=${INTERVAL_US}`, `--cpu-prof-dir=${dir}`, script, 'run', loop],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  if (code !== 0) throw new Error(`profiled loop exited with code ${code}`)
  const { calls, elapsedMs, startUs, endUs } = JSON.parse(out.trim().split('\n').at(-1)!) as {
    calls: number
    elapsedMs: number
    startUs: number
    endUs: number
  }
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))!
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile
  const { rows, sampledUs, idleUs } = analyzeProfile(profile, startUs, endUs)
  const perCall = (us: number) => us / calls
  const interesting = rows
    .filter((r) => !r.name.startsWith('(root)') && !r.name.startsWith('(program)'))
    .filter((r) => perCall(r.selfUs) >= 0.002 || (r.name.includes('keel ') && perCall(r.totalUs) >= 0.005))
    .sort((a, b) => b.totalUs - a.totalUs)
    .slice(0, 40)
  const table = markdownTable(
    ['function (file:line)', 'inclusive µs/call', 'self µs/call', 'self, share of samples'],
    interesting.map((r) => [
      r.name,
      fmt(perCall(r.totalUs), 3),
      fmt(perCall(r.selfUs), 3),
      `${((r.selfUs / Math.max(1, sampledUs)) * 100).toFixed(1)} %`,
    ]),
    [false, true, true, true],
  )
  const what =
    loop === 'l1'
      ? 'keel `db.cached` L1 hit, awaited back to back'
      : 'keel `db.cached` Redis hit (`l1.maxEntries: 1`, two keys in turn), awaited back to back'
  const header =
    `### ${what}\n\n` +
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}: ${calls.toLocaleString('en-US')} calls in ${(elapsedMs / 1_000).toFixed(1)} s ` +
    `(${fmt((elapsedMs * 1_000) / calls, 3)} µs/call wall, ${fmt(perCall(sampledUs - idleUs), 3)} µs/call on CPU in this process, ${fmt(perCall(idleUs), 3)} µs/call idle, i.e. waiting for Redis). ` +
    `Sampled every ${INTERVAL_US} µs by \`node --cpu-prof\`; inclusive = the function and everything it called; the profiler's own overhead slows the loop (compare the wall time with cache.js's unprofiled figures), so read the proportions; the pieces below are timed without it. Profile: ${join(dir, file)}\n\n`
  return `${header}${table}\n`
}

async function main(): Promise<void> {
  if (process.argv[2] === 'run') {
    await runLoop(process.argv[3] as Loop)
    return
  }
  const arg = process.argv[2] ?? 'all'
  const loops: Loop[] = arg === 'all' ? ['l1', 'l2'] : [arg as Loop]
  const dir = process.env.BENCH_RESULTS_DIR ?? join(repoRoot, 'bench/results')
  mkdirSync(dir, { recursive: true })
  const parts: string[] = []
  for (const loop of loops) {
    const markdown = await profileLoop(loop)
    console.log(`\n${markdown}`)
    parts.push(markdown)
  }
  const pieces = await components()
  console.log(`\n${pieces}`)
  parts.push(pieces)
  const file = join(dir, 'cache-profile.md')
  writeFileSync(
    file,
    `## Where keel's cache time goes\n\n\`node bench/dist/cache-profile.js ${arg}\`\n\n${parts.join('\n')}`,
  )
  console.log(`wrote ${file}`)
}

runMain(main)
