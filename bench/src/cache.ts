/**
 * keel cache benchmark: keel's `db.cached` against raw lru-cache and ioredis and against the peer
 * caches (cache-manager, bentocache, @epic-web/cachified), side by side in one run, on the local
 * stack's Redis. Three scenarios, run one after the other:
 *
 *   l1        an L1 hit, awaited calls back to back in this process: per-call time of each batch
 *   l2        a Redis hit (no L1 copy): the same, one round trip per call
 *   stampede  N worker processes x M concurrent cold reads of one key, a loader that INCRs a Redis
 *             counter and sleeps: how many times the loader ran
 *
 *   node bench/dist/cache.js [all|l1|l2|stampede]
 *
 * Prints tables; writes bench/results/cache.{json,md} and the README's cache section.
 *
 * Environment: BENCH_CACHE_ROUNDS (3), BENCH_CACHE_SECONDS (0.6, per variant and round),
 * BENCH_CACHE_WARMUP_SECONDS (0.4, per variant), BENCH_CACHE_BATCH_MS (5: a batch lasts about this
 * long), BENCH_CACHE_MAX_BATCH (10000 calls), BENCH_CACHE_WORKERS (4), BENCH_CACHE_READS (200 per
 * worker), BENCH_CACHE_LOADER_MS (100), BENCH_CACHE_REPEATS (3), BENCH_CACHE_VARIANTS (comma list narrowing
 * the l1/l2 rows; the raw references always run), KEEL_STACK_FILE (.keel/stack.json), BENCH_RESULTS_DIR
 * (bench/results; the README is refreshed only for the default). A benchmark, not a test: it never
 * fails on timings, only when it cannot run (exit 1).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'
import {
  createKeelCache,
  type Dashboard,
  dashboardValue,
  decodeEntryLikeKeel,
  entryLikeKeel,
  freezeParsedLikeKeel,
  isDashboard,
  rawRedis,
  TTL_MS,
} from './lib/cache-common.js'
import {
  cacheLibraryVersions,
  createBento,
  createCacheManagerMemory,
  createCacheManagerTiered,
  createCachified,
  type DoneMessage,
  type GoMessage,
  STAMPEDE_VARIANTS,
  type StampedeVariant,
} from './lib/cache-peers.js'
import { envNumber } from './lib/env.js'
import { type MachineMeta, machineMeta } from './lib/machine.js'
import { fmt, fmtRatio, markdownTable } from './lib/report.js'
import { previousResults } from './lib/results.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median, percentile, round } from './lib/stats.js'

// ---------------------------------------------------------------------------------------------- settings

const settings = {
  rounds: Math.round(envNumber('BENCH_CACHE_ROUNDS', 3)),
  roundSeconds: envNumber('BENCH_CACHE_SECONDS', 0.6),
  warmupSeconds: envNumber('BENCH_CACHE_WARMUP_SECONDS', 0.4),
  batchMs: envNumber('BENCH_CACHE_BATCH_MS', 5),
  maxBatch: Math.round(envNumber('BENCH_CACHE_MAX_BATCH', 10_000)),
  workers: Math.round(envNumber('BENCH_CACHE_WORKERS', 4)),
  reads: Math.round(envNumber('BENCH_CACHE_READS', 200)),
  loaderMs: envNumber('BENCH_CACHE_LOADER_MS', 100),
  repeats: Math.round(envNumber('BENCH_CACHE_REPEATS', 3)),
}

const SCENARIOS = ['l1', 'l2', 'stampede'] as const
type Scenario = (typeof SCENARIOS)[number]

function parseScenarios(arg: string | undefined): Scenario[] {
  if (arg === undefined || arg === 'all' || arg === 'cache') return [...SCENARIOS]
  if ((SCENARIOS as readonly string[]).includes(arg)) return [arg as Scenario]
  console.error(`usage: node bench/dist/cache.js [all|${SCENARIOS.join('|')}]  (got ${JSON.stringify(arg)})`)
  process.exit(2)
}

/** BENCH_CACHE_VARIANTS=keel-nofreeze,bento-get narrows the l1/l2 rows (the raw references always run). */
function wanted(key: string): boolean {
  const raw = process.env.BENCH_CACHE_VARIANTS
  if (raw === undefined || raw.trim() === '') return true
  return raw
    .split(',')
    .map((s) => s.trim())
    .includes(key)
}

/** The figures the issue measured on its machine, printed beside this run's for orientation. */
const ISSUE = {
  lru: '0.33 µs',
  'cm-memory-get': '0.95 µs',
  'bento-get': '10 µs',
  'ioredis-get': '67 µs',
  'bento-l2-getorset': '91 µs',
  none: '800',
  'cache-manager': '4',
  cachified: '4',
  bentocache: '2',
} as Record<string, string>

/** l2VsGetParse: a Redis hit against a raw ioredis GET + JSON.parse of the same value (issue #11). */
const TARGETS = { l1MedianUs: 1, l1VsLru: 3, l2VsGetParse: 1.1, stampedeLoads: 1 }

// ------------------------------------------------------------------------------------ micro measurements

/** A variant of the l1 or l2 scenario: `batch(n)` makes n awaited calls back to back. */
interface MicroVariant {
  key: string
  label: string
  batch(n: number): Promise<void>
  /** One call, for the correctness check. */
  once(): Promise<unknown>
  /** Loader calls so far (hits must not load). */
  loads(): number
  /** A substring of this variant's Redis keys, to report the stored size. */
  redisKeyHint?: string
}

/** The variants of a scenario and what closes the clients they share. */
interface MicroSetup {
  variants: MicroVariant[]
  closers: Array<() => Promise<unknown>>
}

interface MicroRecord {
  key: string
  label: string
  /** Calls per batch (batches last about BENCH_CACHE_BATCH_MS). */
  batchCalls: number
  batches: number
  calls: number
  /** Median and p99 over batches of a batch's time per call, in ns. */
  medianNs: number
  p99Ns: number
  roundMedianNs: number[]
  /**
   * Against the scenario's reference: the median over cycles of this variant's batch over the
   * reference's batch of the same cycle (paired, so the machine's load at that moment cancels out), and
   * the range of the per-round medians of those ratios.
   */
  ratio: number | undefined
  ratioMin: number | undefined
  ratioMax: number | undefined
  /** The same against each reference of the scenario, by key. */
  ratios: Record<string, { median: number; min: number; max: number }>
  /** Redis commands per call seen in INFO commandstats over a verification batch. */
  redisCommandsPerCall: number | undefined
  redisCommands: Record<string, number>
  /** Commands per call below the noise floor in that window (other clients of the shared Redis). */
  otherClientsCommandsPerCall: number | undefined
  /** Serialized bytes of the value in Redis, when it has a Redis entry. */
  storedBytes: number | undefined
  loadsDuringMeasurement: number
  issue: string | undefined
  error: string | undefined
}

interface MicroScenarioRecord {
  date: string
  /** Redis restarted while this scenario ran (another suite sharing the stack): its numbers are suspect. */
  redisRestarted?: boolean
  reference: string
  rounds: number
  roundSeconds: number
  warmupSeconds: number
  variants: MicroRecord[]
}

/** Keeps results alive so no call can be optimized away. */
const sink: unknown[] = [undefined]

function nowMs(): number {
  return performance.now()
}

/** Batch size so one batch lasts about `batchMs`, from a short timed probe. */
async function calibrate(variant: MicroVariant): Promise<number> {
  let n = 64
  for (;;) {
    const t0 = nowMs()
    await variant.batch(n)
    const ms = nowMs() - t0
    if (ms >= 2 || n >= settings.maxBatch) {
      const perCall = ms / n
      return Math.max(16, Math.min(settings.maxBatch, Math.round(settings.batchMs / perCall)))
    }
    n *= 2
  }
}

async function runFor(variant: MicroVariant, calls: number, seconds: number, into: number[]): Promise<void> {
  const until = nowMs() + seconds * 1_000
  do {
    const t0 = nowMs()
    await variant.batch(calls)
    into.push(((nowMs() - t0) * 1e6) / calls)
  } while (nowMs() < until)
}

type CommandStats = Map<string, number>

async function commandStats(admin: Redis): Promise<CommandStats> {
  const text = await admin.info('commandstats')
  const out: CommandStats = new Map()
  for (const line of text.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (m) out.set(m[1]!, Number(m[2]))
  }
  return out
}

/**
 * Commands at fewer than this many per call are another client's: the stack's Redis is shared (other
 * suites run job queues on it), and a variant's own commands come in whole numbers per call.
 */
const COMMAND_NOISE_FLOOR = 0.5

/** Redis commands per call over one batch, from INFO commandstats (INFO itself and other clients' excluded). */
async function redisCommandsPerCall(
  admin: Redis,
  variant: MicroVariant,
  calls: number,
): Promise<{ perCall: number; commands: Record<string, number>; othersPerCall: number }> {
  const before = await commandStats(admin)
  await variant.batch(calls)
  const after = await commandStats(admin)
  const commands: Record<string, number> = {}
  let total = 0
  let others = 0
  for (const [name, n] of after) {
    if (name === 'info') continue
    const rate = (n - (before.get(name) ?? 0)) / calls
    if (rate >= COMMAND_NOISE_FLOOR) {
      commands[name] = round(rate, 2)
      total += rate
    } else if (rate > 0) others += rate
  }
  return { perCall: total, commands, othersPerCall: others }
}

async function storedBytes(admin: Redis, hint: string): Promise<number | undefined> {
  let cursor = '0'
  let largest: number | undefined
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `*${hint}*`, 'COUNT', 1000)
    cursor = next
    for (const key of keys) {
      if ((await admin.type(key)) !== 'string') continue
      const n = await admin.strlen(key)
      largest = Math.max(largest ?? 0, n)
    }
  } while (cursor !== '0')
  return largest
}

/**
 * Checks and warms every variant, sizes its batches, then measures all of them interleaved batch by
 * batch in `rounds` rounds. Per batch: elapsed / calls.
 */
async function measureMicro(
  title: string,
  variants: MicroVariant[],
  admin: Redis,
  /** The first is the scenario's reference; every row gets a paired ratio to each. */
  referenceKeys: readonly string[],
): Promise<MicroScenarioRecord> {
  console.log(
    `\n${title}: ${variants.length} variants, warm-up then ${settings.rounds} rounds x ${settings.roundSeconds} s`,
  )
  const errors = new Map<string, string>()
  const batchCalls = new Map<string, number>()
  const samples = new Map<string, number[][]>()
  const loadsBefore = new Map<string, number>()
  for (const v of variants) {
    try {
      const value = await v.once()
      if (!isDashboard(value)) throw new Error(`returned ${JSON.stringify(value)?.slice(0, 80)}`)
      const calls = await calibrate(v)
      await runFor(v, calls, settings.warmupSeconds, [])
      batchCalls.set(v.key, calls)
      samples.set(v.key, [])
      loadsBefore.set(v.key, v.loads())
    } catch (error) {
      errors.set(v.key, describe(error))
      console.log(`  ! ${v.key}: ${describe(error)}`)
    }
  }
  // Interleaved batch by batch (one batch of each variant in turn, the order reversed every cycle), so
  // load from elsewhere on this shared machine weighs on every variant alike.
  let live = variants.filter((v) => !errors.has(v.key))
  for (let r = 0; r < settings.rounds; r++) {
    const round = new Map(live.map((v) => [v.key, [] as number[]]))
    const until = nowMs() + settings.roundSeconds * live.length * 1_000
    for (let cycle = 0; nowMs() < until && live.length > 0; cycle++) {
      for (const v of cycle % 2 === 0 ? live : [...live].reverse()) {
        const calls = batchCalls.get(v.key)!
        try {
          const t0 = nowMs()
          await v.batch(calls)
          round.get(v.key)!.push(((nowMs() - t0) * 1e6) / calls)
        } catch (error) {
          errors.set(v.key, describe(error))
        }
      }
      live = live.filter((v) => !errors.has(v.key))
    }
    for (const v of live) samples.get(v.key)!.push(round.get(v.key)!)
    process.stdout.write(`  round ${r + 1}/${settings.rounds} done\n`)
  }
  const records: MicroRecord[] = []
  for (const v of variants) {
    const rounds = samples.get(v.key) ?? []
    const all = rounds.flat().sort((a, b) => a - b)
    let redis: Awaited<ReturnType<typeof redisCommandsPerCall>> | undefined
    let bytes: number | undefined
    const error = errors.get(v.key)
    if (error === undefined) {
      redis = await redisCommandsPerCall(admin, v, Math.min(batchCalls.get(v.key)!, 2_000)).catch(
        () => undefined,
      )
      if (v.redisKeyHint !== undefined)
        bytes = await storedBytes(admin, v.redisKeyHint).catch(() => undefined)
    }
    records.push({
      key: v.key,
      label: v.label,
      batchCalls: batchCalls.get(v.key) ?? 0,
      batches: all.length,
      calls: all.length * (batchCalls.get(v.key) ?? 0),
      medianNs: all.length > 0 ? median(all) : Number.NaN,
      p99Ns: percentile(all, 99),
      roundMedianNs: rounds.map((x) => median(x)),
      ratio: undefined,
      ratioMin: undefined,
      ratioMax: undefined,
      ratios: {},
      redisCommandsPerCall: redis === undefined ? undefined : round(redis.perCall, 3),
      redisCommands: redis?.commands ?? {},
      otherClientsCommandsPerCall: redis === undefined ? undefined : round(redis.othersPerCall, 3),
      storedBytes: bytes,
      loadsDuringMeasurement: error === undefined ? v.loads() - (loadsBefore.get(v.key) ?? 0) : 0,
      issue: ISSUE[v.key],
      error,
    })
  }
  for (const refKey of referenceKeys) {
    const ref = samples.get(refKey)
    if (ref === undefined || errors.has(refKey)) continue
    for (const rec of records) {
      const mine = samples.get(rec.key)
      if (mine === undefined || rec.error !== undefined) continue
      const perRound = mine.map((batches, r) => {
        const theirs = ref[r] ?? []
        const n = Math.min(batches.length, theirs.length)
        return Array.from({ length: n }, (_, i) => batches[i]! / theirs[i]!)
      })
      const all = perRound.flat()
      if (all.length === 0) continue
      const roundMedians = perRound.filter((x) => x.length > 0).map((x) => median(x))
      rec.ratios[refKey] = {
        median: round(median(all), 3),
        min: round(Math.min(...roundMedians), 3),
        max: round(Math.max(...roundMedians), 3),
      }
    }
  }
  for (const rec of records) {
    const r = rec.ratios[referenceKeys[0]!]
    rec.ratio = r?.median
    rec.ratioMin = r?.min
    rec.ratioMax = r?.max
  }
  return {
    date: new Date().toISOString(),
    reference: referenceKeys[0]!,
    rounds: settings.rounds,
    roundSeconds: settings.roundSeconds,
    warmupSeconds: settings.warmupSeconds,
    variants: records,
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error)
}

// -------------------------------------------------------------------------------------------- contexts

interface Context {
  redisUrl: string
  primaryUrl: string
  /** Fresh per run: every Redis key of this run contains it. */
  runId: string
  value: Dashboard
  admin: Redis
}

function counter(): { inc: () => void; get: () => number } {
  let n = 0
  return { inc: () => void n++, get: () => n }
}

// --------------------------------------------------------------------------------------------- L1 hits

async function l1Variants(ctx: Context): Promise<MicroSetup> {
  const { value, runId, redisUrl } = ctx
  const KEY = 'dashboard'
  const variants: MicroVariant[] = []
  const closers: MicroSetup['closers'] = []

  const lru = new LRUCache<string, Dashboard>({ max: 10_000 })
  lru.set(KEY, value)
  variants.push({
    key: 'lru',
    label: 'raw lru-cache get (awaited)',
    batch: async (n) => {
      for (let i = 0; i < n; i++) sink[0] = await lru.get(KEY)
    },
    once: async () => lru.get(KEY),
    loads: () => 0,
  })

  if (wanted('lru-built-key')) {
    // A composite key (`${scope}\u0000${key}`, keel's L1 key) built on every call: a new string, so the Map
    // lookup inside lru-cache has to flatten and hash it each time (a literal's hash is computed once).
    // keel builds it per call up to 4524d7c and memoizes it since; this row shows what that is worth.
    const built = new LRUCache<string, Dashboard>({ max: 10_000 })
    const scopes = { scope: 't:t001', key: KEY }
    built.set(`${scopes.scope}\u0000${scopes.key}`, value)
    variants.push({
      key: 'lru-built-key',
      label: 'raw lru-cache get, composite key built per call (scope + NUL + key)',
      batch: async (n) => {
        for (let i = 0; i < n; i++) sink[0] = await built.get(`${scopes.scope}\u0000${scopes.key}`)
      },
      once: async () => built.get(`${scopes.scope}\u0000${scopes.key}`),
      loads: () => 0,
    })
  }

  if (wanted('cm-memory-get')) {
    const cm = createCacheManagerMemory()
    closers.push(() => cm.disconnect())
    await cm.set(KEY, value)
    variants.push({
      key: 'cm-memory-get',
      label: 'cache-manager get, default memory store (Keyv Map)',
      batch: async (n) => {
        for (let i = 0; i < n; i++) sink[0] = await cm.get(KEY)
      },
      once: () => cm.get(KEY),
      loads: () => 0,
    })
  }

  if (wanted('cm-tiered-get') || wanted('cm-tiered-wrap')) {
    const cm = createCacheManagerTiered(redisUrl, `${runId}-cml1`)
    closers.push(() => cm.disconnect())
    await cm.set(KEY, value)
    if (wanted('cm-tiered-get')) {
      variants.push({
        key: 'cm-tiered-get',
        label: 'cache-manager get, CacheableMemory L1 + @keyv/redis L2',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await cm.get(KEY)
        },
        once: () => cm.get(KEY),
        loads: () => 0,
      })
    }
    if (wanted('cm-tiered-wrap')) {
      const loads = counter()
      const load = async () => {
        loads.inc()
        return value
      }
      variants.push({
        key: 'cm-tiered-wrap',
        label: 'cache-manager wrap, CacheableMemory L1 + @keyv/redis L2',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await cm.wrap(KEY, load, TTL_MS)
        },
        once: () => cm.wrap(KEY, load, TTL_MS),
        loads: loads.get,
      })
    }
  }

  if (wanted('bento-get') || wanted('bento-getorset')) {
    const bento = createBento(redisUrl, `${runId}-bl1`, { l1: { serialize: true }, bus: true })
    closers.push(() => bento.disconnectAll())
    await bento.set({ key: KEY, value, ttl: TTL_MS })
    if (wanted('bento-get')) {
      variants.push({
        key: 'bento-get',
        label: 'bentocache get, L1 memoryDriver (serialized) + Redis L2 + bus',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await bento.get({ key: KEY })
        },
        once: () => bento.get({ key: KEY }),
        loads: () => 0,
      })
    }
    if (wanted('bento-getorset')) {
      const loads = counter()
      const factory = async () => {
        loads.inc()
        return value
      }
      variants.push({
        key: 'bento-getorset',
        label: 'bentocache getOrSet, L1 memoryDriver (serialized) + Redis L2 + bus',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await bento.getOrSet({ key: KEY, factory, ttl: TTL_MS })
        },
        once: () => bento.getOrSet({ key: KEY, factory, ttl: TTL_MS }),
        loads: loads.get,
      })
    }
  }

  if (wanted('bento-raw-getorset')) {
    const bento = createBento(redisUrl, `${runId}-bl1raw`, { l1: { serialize: false }, bus: true })
    closers.push(() => bento.disconnectAll())
    await bento.set({ key: KEY, value, ttl: TTL_MS })
    const loads = counter()
    const factory = async () => {
      loads.inc()
      return value
    }
    variants.push({
      key: 'bento-raw-getorset',
      label: 'bentocache getOrSet, L1 memoryDriver serialize: false + Redis L2 + bus',
      batch: async (n) => {
        for (let i = 0; i < n; i++) sink[0] = await bento.getOrSet({ key: KEY, factory, ttl: TTL_MS })
      },
      once: () => bento.getOrSet({ key: KEY, factory, ttl: TTL_MS }),
      loads: loads.get,
    })
  }

  {
    const keel = createKeelCache({ redisUrl, primaryUrl: ctx.primaryUrl, prefix: `${runId}-kl1` })
    closers.push(() => keel.close())
    const db = keel.tenant('t001')
    const loads = counter()
    const loader = async () => {
      loads.inc()
      return dashboardValue()
    }
    // The call as the README writes it: a fresh options object per call, a tag, a fixed key.
    variants.push({
      key: 'keel',
      label: 'keel db.cached, L1 hit (Redis configured)',
      batch: async (n) => {
        for (let i = 0; i < n; i++)
          sink[0] = await db.cached({ key: KEY, ttlMs: TTL_MS, tags: ['invoices'] }, loader)
      },
      once: () => db.cached({ key: KEY, ttlMs: TTL_MS, tags: ['invoices'] }, loader),
      loads: loads.get,
    })
    if (wanted('keel-tenant-per-call')) {
      // Its own loader and count, so a load is charged to the row whose call ran it.
      const loads = counter()
      const loader = async () => {
        loads.inc()
        return dashboardValue()
      }
      variants.push({
        key: 'keel-tenant-per-call',
        label: 'keel keel.tenant(id).cached per call, L1 hit',
        batch: async (n) => {
          for (let i = 0; i < n; i++)
            sink[0] = await keel
              .tenant('t001')
              .cached({ key: KEY, ttlMs: TTL_MS, tags: ['invoices'] }, loader)
        },
        once: () => keel.tenant('t001').cached({ key: KEY, ttlMs: TTL_MS, tags: ['invoices'] }, loader),
        loads: loads.get,
      })
    }
  }
  return { variants, closers }
}

// ------------------------------------------------------------------------------------------ Redis hits

async function l2Variants(ctx: Context): Promise<MicroSetup> {
  const { value, runId, redisUrl } = ctx
  const variants: MicroVariant[] = []
  const closers: MicroSetup['closers'] = []

  const raw = rawRedis(redisUrl)
  closers.push(() => raw.quit())
  const jsonKey = `${runId}-raw:dashboard`
  await raw.set(jsonKey, JSON.stringify(value), 'PX', TTL_MS)
  variants.push({
    key: 'ioredis-get',
    label: 'raw ioredis GET (string, no parse)',
    batch: async (n) => {
      for (let i = 0; i < n; i++) sink[0] = await raw.get(jsonKey)
    },
    once: async () => JSON.parse((await raw.get(jsonKey))!),
    loads: () => 0,
    redisKeyHint: jsonKey,
  })
  variants.push({
    key: 'ioredis-get-parse',
    label: 'raw ioredis GET + JSON.parse',
    batch: async (n) => {
      for (let i = 0; i < n; i++) sink[0] = JSON.parse((await raw.get(jsonKey))!)
    },
    once: async () => JSON.parse((await raw.get(jsonKey))!),
    loads: () => 0,
    redisKeyHint: jsonKey,
  })

  if (wanted('ioredis-mget') || wanted('ioredis-mget-json') || wanted('ioredis-mget-json-freeze')) {
    // keel's round trip by hand: MGET of the value and its invalidation counters (the key's and the tag's,
    // as keel reads them for a call with one tag), then the decode of the same entry layout keel stores
    // (ADR 0018: a format byte, a binary header with the times and the counters, then the value's JSON),
    // then the same freeze keel applies to a JSON value it just decoded. keel = these + its bookkeeping.
    const entryKey = `${runId}-rawentry:dashboard`
    const versionKey = `${runId}-rawentry:kv`
    const tagKey = `${runId}-rawentry:tag`
    await raw.set(entryKey, entryLikeKeel(value, Date.now() + TTL_MS, ['0', '0']), 'PX', TTL_MS)
    const read = () => raw.mgetBuffer(entryKey, versionKey, tagKey)
    const decode = (buf: Buffer | null): Dashboard => decodeEntryLikeKeel(buf!).value as Dashboard
    if (wanted('ioredis-mget')) {
      variants.push({
        key: 'ioredis-mget',
        label: 'by hand: ioredis MGET (value + key and tag counters), no decode',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await read()
        },
        once: async () => decode((await read())[0]!),
        loads: () => 0,
        redisKeyHint: entryKey,
      })
    }
    if (wanted('ioredis-mget-json')) {
      variants.push({
        key: 'ioredis-mget-json',
        label: "by hand: MGET + keel's entry decode (header, JSON.parse)",
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = decode((await read())[0]!)
        },
        once: async () => decode((await read())[0]!),
        loads: () => 0,
        redisKeyHint: entryKey,
      })
    }
    if (wanted('ioredis-mget-json-freeze')) {
      variants.push({
        key: 'ioredis-mget-json-freeze',
        label: "by hand: MGET + entry decode + keel's freeze of a decoded JSON value",
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = freezeParsedLikeKeel(decode((await read())[0]!))
        },
        once: async () => freezeParsedLikeKeel(decode((await read())[0]!)),
        loads: () => 0,
        redisKeyHint: entryKey,
      })
    }
  }

  if (wanted('bento-l2-get') || wanted('bento-l2-getorset')) {
    const bento = createBento(redisUrl, `${runId}-bl2`, { bus: false })
    closers.push(() => bento.disconnectAll())
    const key = 'dashboard'
    await bento.set({ key, value, ttl: TTL_MS })
    if (wanted('bento-l2-get')) {
      variants.push({
        key: 'bento-l2-get',
        label: 'bentocache get, Redis-only store (no L1)',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await bento.get({ key })
        },
        once: () => bento.get({ key }),
        loads: () => 0,
        redisKeyHint: `${runId}-bl2`,
      })
    }
    if (wanted('bento-l2-getorset')) {
      const loads = counter()
      const factory = async () => {
        loads.inc()
        return value
      }
      variants.push({
        key: 'bento-l2-getorset',
        label: 'bentocache getOrSet, Redis-only store (no L1)',
        batch: async (n) => {
          for (let i = 0; i < n; i++) sink[0] = await bento.getOrSet({ key, factory, ttl: TTL_MS })
        },
        once: () => bento.getOrSet({ key, factory, ttl: TTL_MS }),
        loads: loads.get,
        redisKeyHint: `${runId}-bl2`,
      })
    }
  }

  if (wanted('cm-redis-get')) {
    const cm = createCacheManagerTiered(redisUrl, `${runId}-cml2`, true)
    closers.push(() => cm.disconnect())
    await cm.set('dashboard', value)
    variants.push({
      key: 'cm-redis-get',
      label: 'cache-manager get, @keyv/redis store only (node-redis)',
      batch: async (n) => {
        for (let i = 0; i < n; i++) sink[0] = await cm.get('dashboard')
      },
      once: () => cm.get('dashboard'),
      loads: () => 0,
      redisKeyHint: `${runId}-cml2`,
    })
  }

  if (wanted('cachified-redis')) {
    const c = await createCachified(redisUrl)
    closers.push(() => c.close())
    const key = `${runId}-cf:dashboard`
    const loads = counter()
    const load = async () => {
      loads.inc()
      return value
    }
    await c.read(key, load)
    variants.push({
      key: 'cachified-redis',
      label: 'cachified, cachified-redis-adapter (node-redis)',
      batch: async (n) => {
        for (let i = 0; i < n; i++) sink[0] = await c.read(key, load)
      },
      once: () => c.read(key, load),
      loads: loads.get,
      redisKeyHint: key,
    })
  }

  const keelL2 = async (key: string, label: string, prefix: string, freeze: boolean): Promise<void> => {
    const keel = createKeelCache({
      redisUrl,
      primaryUrl: ctx.primaryUrl,
      prefix,
      l1MaxEntries: 1,
      l1Freeze: freeze,
    })
    closers.push(() => keel.close())
    const db = keel.tenant('t001')
    const loads = counter()
    const loader = async () => {
      loads.inc()
      return dashboardValue()
    }
    const keys = ['dashboard-a', 'dashboard-b']
    // The turn carries over from batch to batch: a call never asks for the key the previous one read.
    let turn = 0
    const next = () => keys[turn++ & 1]!
    await db.cached({ key: next(), ttlMs: TTL_MS, tags: ['invoices'] }, loader)
    await db.cached({ key: next(), ttlMs: TTL_MS, tags: ['invoices'] }, loader)
    variants.push({
      key,
      label,
      batch: async (n) => {
        for (let i = 0; i < n; i++)
          sink[0] = await db.cached({ key: next(), ttlMs: TTL_MS, tags: ['invoices'] }, loader)
      },
      once: () => db.cached({ key: next(), ttlMs: TTL_MS, tags: ['invoices'] }, loader),
      loads: loads.get,
      redisKeyHint: prefix,
    })
  }
  // keel with an L1 of one entry, reading two keys in turn: each call finds the other key in L1, so
  // every call misses L1 and is served from Redis (one MGET), through keel's whole L2-hit path: the
  // decode, the deep freeze and the L1 write (and the eviction of the other key) included.
  await keelL2('keel', 'keel db.cached, Redis hit (L1 of 1 entry, 2 keys in turn)', `${runId}-kl2`, true)
  if (wanted('keel-nofreeze')) {
    await keelL2(
      'keel-nofreeze',
      'keel db.cached, Redis hit, cache.l1.freeze: false',
      `${runId}-kl2nf`,
      false,
    )
  }
  return { variants, closers }
}

// -------------------------------------------------------------------------------------------- stampede

interface StampedeRecord {
  date: string
  redisRestarted?: boolean
  workers: number
  readsPerWorker: number
  loaderMs: number
  repeats: number
  variants: Array<{
    key: StampedeVariant
    label: string
    loaderCalls: number[]
    /** Until every read of the round was answered, from the first worker's release (ms). */
    servedMs: number[]
    /** Between the first and the last worker starting its reads (ms). */
    releaseSpreadMs: number[]
    ok: number
    wrong: number
    errors: number
    firstError: string | undefined
    startupMs: number
    issue: string | undefined
    error: string | undefined
  }>
}

const STAMPEDE_LABELS: Record<StampedeVariant, string> = {
  none: 'no protection (ioredis GET, load, SET)',
  'cache-manager': 'cache-manager wrap (CacheableMemory + @keyv/redis)',
  cachified: 'cachified (cachified-redis-adapter)',
  bentocache: 'bentocache getOrSet (memory L1 + Redis L2 + bus)',
  keel: 'keel db.cached',
}

function workerScript(): string {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'cache-worker.js')
  if (!existsSync(script))
    throw new Error(`${script} is missing: build the bench first (pnpm --filter @keel/bench build)`)
  return script
}

interface Worker {
  child: ChildProcess
  next(): Promise<DoneMessage>
}

async function startWorkers(ctx: Context, variant: StampedeVariant): Promise<Worker[]> {
  const script = workerScript()
  const workers: Worker[] = []
  const ready: Promise<void>[] = []
  for (let i = 0; i < settings.workers; i++) {
    const child = fork(script, [], {
      env: {
        ...process.env,
        CACHE_WORKER_VARIANT: variant,
        CACHE_WORKER_REDIS_URL: ctx.redisUrl,
        CACHE_WORKER_PRIMARY_URL: ctx.primaryUrl,
        CACHE_WORKER_PREFIX: `${ctx.runId}-st`,
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const queue: DoneMessage[] = []
    const waiting: Array<(m: DoneMessage) => void> = []
    let failed: Error | undefined
    const rejecters: Array<(e: Error) => void> = []
    child.on('message', (m: { type: string }) => {
      if (m.type !== 'done') return
      const w = waiting.shift()
      if (w) w(m as DoneMessage)
      else queue.push(m as DoneMessage)
    })
    child.on('exit', (code) => {
      failed = new Error(`${variant} worker exited (code ${code})`)
      for (const r of rejecters.splice(0)) r(failed)
    })
    ready.push(
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${variant} worker not ready within 20 s`)), 20_000)
        child.once('exit', (code) => {
          clearTimeout(timer)
          reject(new Error(`${variant} worker exited before ready (code ${code})`))
        })
        child.on('message', (m: { type: string }) => {
          if (m.type === 'ready') {
            clearTimeout(timer)
            resolve()
          }
        })
      }),
    )
    workers.push({
      child,
      next: () =>
        new Promise<DoneMessage>((resolve, reject) => {
          if (failed) return reject(failed)
          const m = queue.shift()
          if (m) return resolve(m)
          waiting.push(resolve)
          rejecters.push(reject)
        }),
    })
  }
  try {
    await Promise.all(ready)
  } catch (error) {
    await stopWorkers(workers)
    throw error
  }
  return workers
}

async function stopWorkers(workers: Worker[]): Promise<void> {
  await Promise.all(
    workers.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.send({ type: 'close' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    }),
  )
}

async function stampedeRound(
  ctx: Context,
  workers: Worker[],
  variant: StampedeVariant,
  label: string,
): Promise<{ loads: number; done: DoneMessage[] }> {
  const key = `${ctx.runId}-st-${variant}-${label}-${randomBytes(4).toString('hex')}`
  const counterKey = `${key}:loads`
  const message: GoMessage = {
    type: 'go',
    key,
    counterKey,
    reads: settings.reads,
    loaderMs: settings.loaderMs,
  }
  const results = workers.map((w) => w.next())
  // Released together: four IPC messages sent back to back (their spread is measured and reported).
  for (const w of workers) w.child.send(message)
  const done = await Promise.all(results)
  // The loser of a race may still be writing; the counter is read once every read was answered.
  const loads = Number((await ctx.admin.get(counterKey)) ?? 0)
  return { loads, done }
}

async function runStampede(ctx: Context): Promise<StampedeRecord> {
  console.log(
    `\nStampede: ${settings.workers} processes x ${settings.reads} concurrent cold reads of one key, loader ${settings.loaderMs} ms, ${settings.repeats} rounds per variant (+1 warm-up round)`,
  )
  const record: StampedeRecord = {
    date: new Date().toISOString(),
    workers: settings.workers,
    readsPerWorker: settings.reads,
    loaderMs: settings.loaderMs,
    repeats: settings.repeats,
    variants: [],
  }
  for (const variant of STAMPEDE_VARIANTS) {
    const row: StampedeRecord['variants'][number] = {
      key: variant,
      label: STAMPEDE_LABELS[variant],
      loaderCalls: [],
      servedMs: [],
      releaseSpreadMs: [],
      ok: 0,
      wrong: 0,
      errors: 0,
      firstError: undefined,
      startupMs: 0,
      issue: ISSUE[variant],
      error: undefined,
    }
    record.variants.push(row)
    const started = performance.now()
    let workers: Worker[] = []
    try {
      workers = await startWorkers(ctx, variant)
      row.startupMs = Math.round(performance.now() - started)
      await stampedeRound(ctx, workers, variant, 'warm')
      for (let rep = 0; rep < settings.repeats; rep++) {
        const { loads, done } = await stampedeRound(ctx, workers, variant, `r${rep + 1}`)
        const first = Math.min(...done.map((d) => d.releasedAt))
        row.loaderCalls.push(loads)
        row.servedMs.push(round(Math.max(...done.map((d) => d.releasedAt - first + d.lastMs)), 1))
        row.releaseSpreadMs.push(round(Math.max(...done.map((d) => d.releasedAt)) - first, 2))
        for (const d of done) {
          row.ok += d.ok
          row.wrong += d.wrong
          row.errors += d.errors
          row.firstError ??= d.firstError
        }
      }
      console.log(
        `  ${variant}: loader calls ${row.loaderCalls.join(', ')}; all served after ${row.servedMs.join(', ')} ms`,
      )
    } catch (error) {
      row.error = describe(error)
      console.log(`  ! ${variant}: ${row.error}`)
    } finally {
      await stopWorkers(workers)
    }
  }
  return record
}

// ----------------------------------------------------------------------------------------------- output

interface Meta extends MachineMeta {
  /** At the end of the run: the machine is shared, and its load moves every absolute number. */
  loadAverageEnd?: number[]
  redis: string
  redisUrl: string
  runId: string
  versions: Record<string, string>
  settings: typeof settings
}

interface Results {
  meta: Meta
  l1?: MicroScenarioRecord
  l2?: MicroScenarioRecord
  stampede?: StampedeRecord
  totalS?: number
}

const us = (ns: number | undefined, digits = 2) => (ns === undefined ? 'n/a' : fmt(ns / 1_000, digits))

function ratioCell(r: MicroRecord): string {
  if (r.ratio === undefined) return 'n/a'
  if (r.ratioMin === undefined || r.ratioMax === undefined || r.roundMedianNs.length < 2)
    return fmtRatio(r.ratio)
  return `${fmtRatio(r.ratio)} (${r.ratioMin.toFixed(2)}–${r.ratioMax.toFixed(2)})`
}

function commandsCell(r: MicroRecord): string {
  if (r.redisCommandsPerCall === undefined) return 'n/a'
  const names = Object.entries(r.redisCommands).map(([name, n]) => `${name} ${n}`)
  return names.length === 0 ? '0' : names.join(', ')
}

function l1Table(rec: MicroScenarioRecord): string {
  return markdownTable(
    [
      'variant',
      'median µs/call',
      'p99 µs/call',
      'vs raw lru-cache (range)',
      'calls',
      'Redis cmds/call',
      'issue measured',
    ],
    rec.variants.map((r) => [
      r.error === undefined ? r.label : `${r.label} — failed: ${r.error}`,
      us(r.medianNs, 3),
      us(r.p99Ns, 3),
      ratioCell(r),
      r.calls.toLocaleString('en-US'),
      commandsCell(r),
      r.issue ?? '',
    ]),
    [false, true, true, true, true, false, true],
  )
}

function l2Table(rec: MicroScenarioRecord): string {
  return markdownTable(
    [
      'variant',
      'median µs/call',
      'p99 µs/call',
      'vs raw GET (range)',
      'vs GET + JSON.parse (range)',
      'calls',
      'Redis cmds/call',
      'bytes in Redis',
      'issue measured',
    ],
    rec.variants.map((r) => [
      r.error === undefined ? r.label : `${r.label} — failed: ${r.error}`,
      us(r.medianNs, 1),
      us(r.p99Ns, 1),
      ratioCell(r),
      parseCell(r),
      r.calls.toLocaleString('en-US'),
      commandsCell(r),
      r.storedBytes === undefined ? 'n/a' : r.storedBytes.toLocaleString('en-US'),
      r.issue ?? '',
    ]),
    [false, true, true, true, true, true, false, true, true],
  )
}

/** The ratio to GET + JSON.parse (the issue's reference for the Redis hit) with its per-round range. */
function parseCell(r: MicroRecord): string {
  const x = r.ratios['ioredis-get-parse']
  if (x === undefined) return 'n/a'
  return `${fmtRatio(x.median)} (${x.min.toFixed(2)}–${x.max.toFixed(2)})`
}

function stampedeTable(rec: StampedeRecord): string {
  const total = rec.workers * rec.readsPerWorker
  return markdownTable(
    [
      'variant',
      'loader calls (each round)',
      `all ${total} reads served after (ms)`,
      'release spread (ms)',
      'reads ok / wrong / failed',
      'issue measured',
    ],
    rec.variants.map((r) => [
      r.error === undefined ? r.label : `${r.label} — failed: ${r.error}`,
      r.loaderCalls.length === 0 ? 'n/a' : r.loaderCalls.join(', '),
      r.servedMs.length === 0 ? 'n/a' : r.servedMs.map((x) => x.toFixed(0)).join(', '),
      r.releaseSpreadMs.length === 0 ? 'n/a' : fmt(Math.max(...r.releaseSpreadMs), 2),
      `${r.ok} / ${r.wrong} / ${r.errors}`,
      r.issue ?? '',
    ]),
    [false, true, true, true, true, true],
  )
}

function findings(results: Results): string[] {
  const out: string[] = []
  const met = (ok: boolean) => (ok ? 'met' : '**missed**')
  const keelL1 = results.l1?.variants.find((v) => v.key === 'keel')
  if (keelL1 !== undefined && keelL1.error === undefined) {
    const medianUs = keelL1.medianNs / 1_000
    const built = results.l1?.variants.find((v) => v.key === 'lru-built-key')
    out.push(
      `L1 hit: keel ${medianUs.toFixed(3)} µs median (target ≤ ${TARGETS.l1MedianUs} µs: ${met(medianUs <= TARGETS.l1MedianUs)}), ` +
        `${fmtRatio(keelL1.ratio)} of raw lru-cache (target ≤ ${TARGETS.l1VsLru}x: ${met((keelL1.ratio ?? Infinity) <= TARGETS.l1VsLru)})` +
        (built?.ratio === undefined
          ? ''
          : `; raw lru-cache looked up with a composite key built per call (what keel's memoized L1 key avoids) is ${fmtRatio(built.ratio)}`),
    )
  }
  const keelL2 = results.l2?.variants.find((v) => v.key === 'keel')
  if (keelL2 !== undefined && keelL2.error === undefined) {
    const parse = keelL2.ratios['ioredis-get-parse']
    const byHand = results.l2?.variants.find((v) => v.key === 'ioredis-mget-json-freeze')
    const noFreeze = results.l2?.variants.find((v) => v.key === 'keel-nofreeze')
    const handParse = byHand?.ratios['ioredis-get-parse']?.median
    out.push(
      `Redis hit: keel ${(keelL2.medianNs / 1_000).toFixed(1)} µs median, ` +
        (parse === undefined
          ? ''
          : `${fmtRatio(parse.median)} of a raw ioredis GET + JSON.parse (range ${parse.min.toFixed(2)}–${parse.max.toFixed(2)}; ` +
            `target ≤ ${TARGETS.l2VsGetParse}x: ${met(parse.median <= TARGETS.l2VsGetParse)}), `) +
        `${fmtRatio(keelL2.ratio)} of GET alone` +
        (handParse === undefined
          ? ''
          : `; its round trip by hand (MGET + entry decode + keel's freeze) is ${fmtRatio(handParse)} of GET + JSON.parse`) +
        (noFreeze?.ratios['ioredis-get-parse'] === undefined
          ? ''
          : `, keel with \`l1.freeze: false\` ${fmtRatio(noFreeze.ratios['ioredis-get-parse'].median)}`),
    )
  }
  const keelSt = results.stampede?.variants.find((v) => v.key === 'keel')
  if (keelSt !== undefined && keelSt.error === undefined) {
    const worst = Math.max(...keelSt.loaderCalls)
    out.push(
      `Stampede (${results.stampede!.workers} processes x ${results.stampede!.readsPerWorker} cold reads): keel ran the loader ${keelSt.loaderCalls.join(', ')} time(s) ` +
        `(target ${TARGETS.stampedeLoads}: ${met(worst <= TARGETS.stampedeLoads)})`,
    )
  }
  return out
}

function when(iso: string): string {
  return `Measured ${iso.slice(0, 16).replace('T', ' ')} UTC`
}

function renderMarkdown(results: Results): string {
  const m = results.meta
  const v = m.versions
  const parts: string[] = []
  parts.push(
    `Measured ${m.date.slice(0, 10)} on ${m.cores} cores (${m.cpuModel}), Node ${m.node}, Redis ${m.redis} on loopback (the local stack's). ` +
      `@keel/core ${v['@keel/core']} (lru-cache ${v['lru-cache (keel)']}, ioredis ${v['ioredis (keel)']}); lru-cache ${v['lru-cache']}, ioredis ${v.ioredis}, ` +
      `cache-manager ${v['cache-manager']} (keyv ${v.keyv}, cacheable ${v.cacheable}, @keyv/redis ${v['@keyv/redis']}), bentocache ${v.bentocache}, ` +
      `@epic-web/cachified ${v['@epic-web/cachified']} (cachified-redis-adapter ${v['cachified-redis-adapter']}, redis ${v.redis}). ` +
      'The value is the same ~1 KB object everywhere (a dozen dashboard rows); each library serializes it its own way. ' +
      `Load average ${m.loadAverage.join(' / ')} at the start${m.loadAverageEnd === undefined ? '' : `, ${m.loadAverageEnd.join(' / ')} at the end`}: the machine is shared, so absolute times move from run to run; the paired ratios move much less.` +
      (results.totalS === undefined ? '' : ` The whole run took ${results.totalS.toFixed(0)} s.`),
  )
  const summary = findings(results)
  if (summary.length > 0) parts.push(summary.map((line) => `- ${line}`).join('\n'))
  const restarted = (['l1', 'l2', 'stampede'] as const).filter((k) => results[k]?.redisRestarted === true)
  if (restarted.length > 0) {
    parts.push(
      `_Redis restarted while ${restarted.join(', ')} ran (another suite sharing the stack): those numbers are suspect._`,
    )
  }
  if (results.l1 !== undefined) {
    const r = results.l1
    parts.push(
      `### L1 hit, awaited calls in one process\n\n${when(r.date)}: each variant warmed up ${r.warmupSeconds} s, then all measured in ${r.rounds} rounds of ${r.roundSeconds} s per variant, interleaved batch by batch (one batch of each in turn, the order reversed every cycle) so the load of this shared 2-core machine weighs on every row alike; every call awaited, back to back. ` +
        `Time per call = a batch's elapsed time / its calls (batches of up to ${m.settings.maxBatch.toLocaleString('en-US')} calls, fewer for slower variants so a batch lasts ~${m.settings.batchMs} ms); median and p99 over all batches (the p99 catches GC pauses and the machine's other work). Ratios are paired: each batch over the raw lru-cache batch of the same cycle, median over cycles (range: the per-round medians). ` +
        "Redis cmds/call: from Redis's INFO commandstats over one batch (0 = served in process; rates under 0.5 per call are other clients' of the shared Redis and left out). " +
        "cache-manager's CacheableMemory layer sits behind Keyv, which serializes entries for every store but a plain Map, so each of its hits is a JSON.parse with a reviver (most of its time in a CPU profile); bentocache's memoryDriver stores serialized entries by default (`serialize: false` keeps objects).\n\n" +
        l1Table(r),
    )
  }
  if (results.l2 !== undefined) {
    const r = results.l2
    parts.push(
      `### Redis hit (no L1 copy)\n\n${when(r.date)}, same method; ratios paired with raw GET's and with GET + JSON.parse's batches. keel keeps an L1, so it runs here with \`cache.l1.maxEntries: 1\` and reads two keys in turn: each call finds the other key in L1 and is served from Redis (one MGET of the value and its key and tag invalidation counters), through keel's whole L2-hit path (decode, deep freeze, L1 write and eviction); the loader never runs (checked). ` +
        "The \"by hand\" rows rebuild keel's round trip step by step with raw ioredis (MGET, then the decode of keel's entry layout, a small binary header then the value's JSON, then keel's freeze of a freshly decoded JSON value), so keel's row minus the last of them is keel's own bookkeeping. " +
        'bentocache runs with a Redis-only store (no L1 layer); cache-manager with only its @keyv/redis store. cache-manager and cachified talk to Redis through node-redis, the others through ioredis. Bytes in Redis: the stored entry, as each library serializes it.\n\n' +
        l2Table(r),
    )
  }
  if (results.stampede !== undefined) {
    const r = results.stampede
    parts.push(
      `### Stampede\n\n${when(r.date)}: ${r.workers} worker processes (child processes, each with its own library instance and connections) x ${r.readsPerWorker} concurrent reads of one cold key, released together; the loader INCRs a Redis counter, then sleeps ${r.loaderMs} ms. ` +
        `${r.repeats} rounds per variant, each on a fresh key, after one warm-up round; the loader calls of each round are listed.\n\n${stampedeTable(r)}`,
    )
  }
  return `${parts.join('\n\n')}\n`
}

// ------------------------------------------------------------------------------------------------- main

/** The server's run_id, which changes when it restarts (retried: it may be restarting right now). */
async function redisRunId(admin: Redis): Promise<string | undefined> {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      return /run_id:(\S+)/.exec(await admin.info('server'))?.[1]
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
  return undefined
}

/** Deletes every key of this run (all of them contain the run id). */
async function cleanup(admin: Redis, runId: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `*${runId}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await admin.unlink(...keys)
  } while (cursor !== '0')
  return deleted
}

async function closeAll(setup: MicroSetup): Promise<void> {
  for (const close of setup.closers) await close().catch(() => undefined)
}

async function main(): Promise<number> {
  const scenarios = parseScenarios(process.argv[2])
  const started = performance.now()
  const stack = readStack()
  if (stack.redis === undefined) throw new Error('the stack has no Redis: run `node scripts/stack.mjs up`')
  const redisUrl = stack.redis.url
  const admin = rawRedis(redisUrl)
  const info = await admin.info('server')
  const runId = `kb${randomBytes(4).toString('hex')}`
  const meta: Meta = {
    ...machineMeta(),
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    redisUrl: redisUrl.replace(/\/\/[^@/]*@/, '//'),
    runId,
    versions: cacheLibraryVersions(),
    settings,
  }
  const ctx: Context = { redisUrl, primaryUrl: stack.primary.url, runId, value: dashboardValue(), admin }
  console.log(
    `keel cache bench: ${meta.cores} cores, Node ${meta.node}, Redis ${meta.redis} at ${meta.redisUrl}, run ${runId}\n` +
      `versions: ${Object.entries(meta.versions)
        .map(([k, x]) => `${k} ${x}`)
        .join(', ')}\nscenarios: ${scenarios.join(', ')}`,
  )
  const results: Results = { ...previousResults<Results>('cache'), meta }
  let broken = false
  try {
    if (scenarios.includes('l1')) {
      const before = await redisRunId(admin)
      const setup = await l1Variants(ctx)
      try {
        results.l1 = await measureMicro('L1 hit', setup.variants, admin, ['lru'])
      } finally {
        await closeAll(setup)
      }
      results.l1.redisRestarted = (await redisRunId(admin)) !== before
      console.log(`\n## L1 hit, awaited calls in one process\n\n${l1Table(results.l1)}`)
    }
    if (scenarios.includes('l2')) {
      const before = await redisRunId(admin)
      const setup = await l2Variants(ctx)
      try {
        results.l2 = await measureMicro('Redis hit', setup.variants, admin, [
          'ioredis-get',
          'ioredis-get-parse',
        ])
      } finally {
        await closeAll(setup)
      }
      results.l2.redisRestarted = (await redisRunId(admin)) !== before
      console.log(`\n## Redis hit (no L1 copy)\n\n${l2Table(results.l2)}`)
    }
    if (scenarios.includes('stampede')) {
      const before = await redisRunId(admin)
      results.stampede = await runStampede(ctx)
      results.stampede.redisRestarted = (await redisRunId(admin)) !== before
      console.log(`\n## Stampede\n\n${stampedeTable(results.stampede)}`)
    }
  } finally {
    const deleted = await cleanup(admin, runId).catch(() => 0)
    console.log(`\n(removed ${deleted} Redis keys of run ${runId})`)
    await admin.quit().catch(() => undefined)
  }
  const restarted = (['l1', 'l2', 'stampede'] as const).filter(
    (k) => scenarios.includes(k) && results[k]?.redisRestarted === true,
  )
  for (const rec of [results.l1, results.l2]) {
    if (rec === undefined) continue
    for (const v of rec.variants) {
      if (v.error !== undefined && rec.redisRestarted !== true) broken = true
      if (v.loadsDuringMeasurement > 0) {
        console.log(`! ${v.key}: the loader ran ${v.loadsDuringMeasurement} times while hits were measured`)
      }
    }
  }
  for (const v of results.stampede?.variants ?? []) {
    const failed = v.error !== undefined || v.errors > 0 || v.wrong > 0
    if (failed && results.stampede?.redisRestarted !== true) broken = true
  }
  if (restarted.length > 0) {
    console.log(
      `\n! Redis restarted during ${restarted.join(', ')} (another suite sharing the stack?): treat those numbers with suspicion and re-run`,
    )
  }
  return finishRun('cache', 'keel cache benchmark', results, started, findings, renderMarkdown, broken)
}

runMain(main)
