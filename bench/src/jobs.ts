/**
 * keel jobs benchmark, in one run against the local stack's Redis:
 *
 * 1. `enqueue`: throughput of `db.enqueue` against raw BullMQ `Queue.add` (same Redis, options a
 *    typical user passes, set like keel's), with 32 enqueues in flight and one at a time; plus raw
 *    `Queue.add` with a priority, two round trips by hand (keel's fallback: its position script, then
 *    `Queue.add`), and keel with an idempotency key. Batches interleaved across variants, a fresh queue
 *    per round and variant, paired ratios.
 * 2. `latency`: enqueue → handler start and enqueue → completed, one job at a time, raw BullMQ
 *    Queue + Worker against keel enqueue + startWorker, each worker in its own process.
 * 3. `fairness`: tenant A floods 5,000 short jobs, then tenant B enqueues one (worker concurrency
 *    10): B's wait and how many of A's jobs started before it, with keel's fair priorities and with
 *    raw BullMQ FIFO ("without keel's scheduling").
 *
 * Prints tables; writes bench/results/jobs.{json,md} and the README's jobs section.
 *
 *   node bench/dist/jobs.js [all|enqueue|latency|fairness]
 *
 * Environment: BENCH_JOBS_ROUNDS (5 per mode), BENCH_JOBS_BATCHES (10 per variant and round),
 * BENCH_JOBS_BATCH (1000 enqueues per batch, BENCH_JOBS_IN_FLIGHT in flight), BENCH_JOBS_IN_FLIGHT (32),
 * BENCH_JOBS_SEQUENTIAL_BATCH (200 enqueues per batch, one at a time), BENCH_JOBS_WARMUP (300 per
 * variant and round, not measured), BENCH_JOBS_LATENCY (200 jobs per variant), BENCH_JOBS_FLOOD (5000),
 * BENCH_JOBS_WORKER_CONCURRENCY (10), BENCH_JOBS_HANDLER_MS (2), BENCH_JOBS_FAIR_REPEATS (3),
 * KEEL_STACK_FILE, BENCH_RESULTS_DIR (bench/results; the README is refreshed only for the default).
 * A benchmark, not a test: it never fails on timings, only when it cannot run (exit 1).
 */
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Keel } from '@keel/core'
import { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import { envNumber } from './lib/env.js'
import {
  createJobsKeel,
  defineBenchJob,
  type InitMessage,
  JOB_NAME,
  jobsLibraryVersions,
  monoMs,
  type ParentMessage,
  payloadFor,
  producerRedis,
  RAW_JOB_OPTS,
  type WorkerMessage,
  type WorkerMode,
} from './lib/jobs-common.js'
import {
  deleteKeys,
  drive,
  dropQueue,
  ENQUEUE_VARIANTS,
  type EnqueueVariant,
  errorText,
  type Runner,
  rawQueue,
  TENANTS,
} from './lib/jobs-runners.js'
import { type MachineMeta, machineMeta } from './lib/machine.js'
import { fmt, fmtInt, fmtRatio, markdownTable } from './lib/report.js'
import { previousResults } from './lib/results.js'
import { finishRun, runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { type LatencySummary, median, summarize } from './lib/stats.js'

// ---------------------------------------------------------------------------------------------- settings

const settings = {
  rounds: Math.round(envNumber('BENCH_JOBS_ROUNDS', 5)),
  /** Batches per variant and round, interleaved with the other variants' batches. */
  batches: Math.round(envNumber('BENCH_JOBS_BATCHES', 10)),
  /** Enqueues per batch with `inFlight` in flight. */
  batchJobs: Math.round(envNumber('BENCH_JOBS_BATCH', 1_000)),
  inFlight: Math.round(envNumber('BENCH_JOBS_IN_FLIGHT', 32)),
  /** Enqueues per batch one at a time. */
  sequentialBatchJobs: Math.round(envNumber('BENCH_JOBS_SEQUENTIAL_BATCH', 200)),
  warmupJobs: Math.round(envNumber('BENCH_JOBS_WARMUP', 300)),
  tenants: TENANTS,
  latencyJobs: Math.round(envNumber('BENCH_JOBS_LATENCY', 200)),
  latencyWarmupJobs: 20,
  floodJobs: Math.round(envNumber('BENCH_JOBS_FLOOD', 5_000)),
  workerConcurrency: Math.round(envNumber('BENCH_JOBS_WORKER_CONCURRENCY', 10)),
  handlerMs: envNumber('BENCH_JOBS_HANDLER_MS', 2),
  fairRepeats: Math.round(envNumber('BENCH_JOBS_FAIR_REPEATS', 3)),
  /** How long B may wait before the fairness run gives up (raw FIFO drains A's backlog first). */
  fairTimeoutS: 120,
}

const TARGETS = { enqueueVsRaw: 0.9 }

const SCENARIOS = ['enqueue', 'latency', 'fairness'] as const
type Scenario = (typeof SCENARIOS)[number]

function parseScenarios(arg: string | undefined): Scenario[] {
  if (arg === undefined || arg === 'all') return [...SCENARIOS]
  if ((SCENARIOS as readonly string[]).includes(arg)) return [arg as Scenario]
  console.error(`usage: node bench/dist/jobs.js [all|${SCENARIOS.join('|')}]  (got ${JSON.stringify(arg)})`)
  process.exit(2)
}

// -------------------------------------------------------------------------------------------- results

interface Meta extends MachineMeta {
  loadAverageEnd?: number[]
  redis: string
  redisUrl: string
  runId: string
  versions: Record<string, string>
  settings: typeof settings
}

/** One batch of one variant: `jobs` enqueues, timed. */
interface EnqueueBatch {
  round: number
  cycle: number
  jobs: number
  jobsPerS: number
  /** CPU of this process per enqueue (keel or BullMQ, ioredis, the loop). */
  clientCpuUs: number
  /** CPU of the Redis server per enqueue (INFO cpu; other clients of the shared Redis add to it). */
  redisCpuUs: number | undefined
  /** Scripts run per enqueue (EVALSHA + EVAL in INFO commandstats: round trips that run Lua). */
  scriptsPerJob: number | undefined
}

interface EnqueueRow {
  key: string
  label: string
  inFlight: number
  /** Measured enqueues per round (batches x batch size). */
  jobsPerRound: number
  batches: EnqueueBatch[]
  medianJobsPerS: number
  medianUsPerJob: number
  /** Median over cycles of this batch's jobs/s over raw Queue.add's batch of the same cycle. */
  ratio: number | undefined
  /** The per-round medians of those ratios: min–max. */
  ratioRange: [number, number] | undefined
  clientCpuUs: number
  redisCpuUs: number | undefined
  scriptsPerJob: number | undefined
  /** Every round's queue held exactly the warm-up + measured jobs afterwards. */
  checked: boolean
  error?: string | undefined
}

interface EnqueueRecord {
  date: string
  rounds: number
  rows: EnqueueRow[]
}

interface LatencyRow {
  key: WorkerMode
  label: string
  enqueueMs: LatencySummary
  startMs: LatencySummary
  completedMs: LatencySummary
  error?: string | undefined
}

interface LatencyRecord {
  date: string
  jobs: number
  workerConcurrency: number
  rows: LatencyRow[]
}

interface FairnessRun {
  repeat: number
  /** From just before B's enqueue call to B's handler start. */
  waitMs: number | undefined
  /** A's jobs that started before B's job, in all (the first `concurrency` of them before B's enqueue). */
  aBeforeB: number | undefined
  /** A's jobs that started after B's enqueue began and before B's job started. */
  aAhead: number | undefined
  /** A's jobs not yet started when B was enqueued. */
  aBacklog: number | undefined
  /** A's start rate over the run (jobs/s), for the time one batch of `concurrency` takes. */
  aJobsPerS: number | undefined
  floodS: number
  error?: string | undefined
}

interface FairnessRow {
  key: WorkerMode
  label: string
  runs: FairnessRun[]
}

interface FairnessRecord {
  date: string
  floodJobs: number
  workerConcurrency: number
  handlerMs: number
  rows: FairnessRow[]
}

interface Results {
  meta: Meta
  enqueue?: EnqueueRecord
  latency?: LatencyRecord
  fairness?: FairnessRecord
  totalS?: number
}

interface Context {
  redisUrl: string
  primaryUrl: string
  runId: string
  admin: Redis
}

// ------------------------------------------------------------------------------------------ Redis helpers

async function redisCpuS(admin: Redis): Promise<number | undefined> {
  try {
    const info = await admin.info('cpu')
    const user = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1])
    const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1])
    return Number.isFinite(user + sys) ? user + sys : undefined
  } catch {
    return undefined
  }
}

async function scriptCalls(admin: Redis): Promise<number | undefined> {
  try {
    const info = await admin.info('commandstats')
    let calls = 0
    for (const m of info.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)) calls += Number(m[2])
    return calls
  } catch {
    return undefined
  }
}

/** Jobs queued under `name`: raw BullMQ's queue, plus keel's queue of the bench's job (ADR 0025). */
async function queuedJobs(ctx: Context, name: string): Promise<number> {
  let total = 0
  for (const queueName of [name, `${name}~${JOB_NAME}`]) {
    const queue = new Queue(queueName, { connection: ctx.admin })
    try {
      const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active')
      total += Object.values(counts).reduce((a, b) => a + b, 0)
    } finally {
      await queue.close().catch(() => undefined)
    }
  }
  return total
}

/** Deletes whatever of this run is left (every queue name, so every key, contains the run id). */
function cleanup(admin: Redis, runId: string): Promise<number> {
  return deleteKeys(admin, `*${runId}*`)
}

// ---------------------------------------------------------------------------------------------- enqueue

async function measureBatch(
  ctx: Context,
  runner: Runner,
  from: number,
  jobs: number,
  inFlight: number,
): Promise<Omit<EnqueueBatch, 'round' | 'cycle'>> {
  const redisBefore = await redisCpuS(ctx.admin)
  const scriptsBefore = await scriptCalls(ctx.admin)
  const cpuBefore = process.cpuUsage()
  const run = await drive(runner, from, jobs, inFlight)
  const cpu = process.cpuUsage(cpuBefore)
  // Two INFO reads bracket the batch; neither runs a script.
  const scriptsAfter = await scriptCalls(ctx.admin)
  const redisAfter = await redisCpuS(ctx.admin)
  if (run.errors > 0) throw new Error(`${run.errors} enqueues failed: ${run.firstError}`)
  return {
    jobs,
    jobsPerS: (jobs * 1_000) / run.elapsedMs,
    clientCpuUs: (cpu.user + cpu.system) / jobs,
    redisCpuUs:
      redisBefore === undefined || redisAfter === undefined
        ? undefined
        : ((redisAfter - redisBefore) * 1e6) / jobs,
    scriptsPerJob:
      scriptsBefore === undefined || scriptsAfter === undefined
        ? undefined
        : (scriptsAfter - scriptsBefore) / jobs,
  }
}

interface Live {
  variant: EnqueueVariant
  name: string
  runner: Runner
  next: number
}

/**
 * One round of one mode: every variant on a fresh queue of its own, warmed up, then `batches` cycles
 * of one batch of each variant in turn (the order reversed every cycle), so that whatever else this
 * machine runs weighs on every variant alike. Round 0 is a warm-up round, not recorded.
 */
async function enqueueRound(
  ctx: Context,
  roundNo: number,
  inFlight: number,
  batch: number,
  record: (variant: EnqueueVariant, sample: EnqueueBatch) => void,
  failed: Map<string, string>,
  checks: Map<string, boolean>,
): Promise<void> {
  const live: Live[] = []
  try {
    for (const variant of ENQUEUE_VARIANTS) {
      if (failed.has(variant.key)) continue
      const name = `kj${ctx.runId}.${variant.key}.f${inFlight}.r${roundNo}`
      try {
        const runner = variant.setup(ctx, name, roundNo)
        live.push({ variant, name, runner, next: 0 })
        const warm = await drive(runner, 0, settings.warmupJobs, inFlight)
        if (warm.errors > 0) throw new Error(`warm-up failed: ${warm.firstError}`)
        live.at(-1)!.next = settings.warmupJobs
      } catch (error) {
        failed.set(variant.key, errorText(error))
      }
    }
    const cycles = roundNo === 0 ? 4 : settings.batches
    for (let c = 0; c < cycles; c++) {
      const order = (c + roundNo) % 2 === 0 ? live : [...live].reverse()
      for (const l of order) {
        if (failed.has(l.variant.key)) continue
        try {
          const sample = await measureBatch(ctx, l.runner, l.next, batch, inFlight)
          l.next += batch
          if (roundNo > 0) record(l.variant, { round: roundNo, cycle: c, ...sample })
        } catch (error) {
          failed.set(l.variant.key, errorText(error))
        }
      }
    }
    for (const l of live) {
      if (failed.has(l.variant.key)) continue
      const ok = (await queuedJobs(ctx, l.name)) === l.next
      checks.set(l.variant.key, (checks.get(l.variant.key) ?? true) && ok)
    }
  } finally {
    for (const l of live) {
      await l.runner.close().catch(() => undefined)
      await dropQueue(ctx.admin, l.name).catch(() => undefined)
    }
  }
}

async function runEnqueue(ctx: Context): Promise<EnqueueRecord> {
  const modes = [
    { inFlight: settings.inFlight, batch: settings.batchJobs },
    { inFlight: 1, batch: settings.sequentialBatchJobs },
  ]
  const rows: EnqueueRow[] = []
  for (const mode of modes) {
    const samples = new Map<string, EnqueueBatch[]>()
    const failed = new Map<string, string>()
    const checks = new Map<string, boolean>()
    const record = (variant: EnqueueVariant, sample: EnqueueBatch) => {
      samples.set(variant.key, [...(samples.get(variant.key) ?? []), sample])
    }
    for (let r = 0; r <= settings.rounds; r++) {
      const t0 = performance.now()
      await enqueueRound(ctx, r, mode.inFlight, mode.batch, record, failed, checks)
      if (r === 0) continue
      const line = ENQUEUE_VARIANTS.map((v) => {
        const own = (samples.get(v.key) ?? []).filter((x) => x.round === r)
        return `${v.key} ${fmtInt(median(own.map((x) => x.jobsPerS)))}`
      }).join(', ')
      console.log(
        `  ${String(mode.inFlight).padStart(2)} in flight, round ${r} (${((performance.now() - t0) / 1_000).toFixed(1)} s), jobs/s: ${line}`,
      )
    }
    for (const [key, error] of failed) console.log(`  ${key} (${mode.inFlight} in flight) failed: ${error}`)
    const reference = samples.get('raw') ?? []
    const refOf = (b: EnqueueBatch) => reference.find((x) => x.round === b.round && x.cycle === b.cycle)
    for (const variant of ENQUEUE_VARIANTS) {
      const own = samples.get(variant.key) ?? []
      const paired = own
        .map((b) => {
          const ref = refOf(b)
          return ref === undefined ? undefined : { round: b.round, ratio: b.jobsPerS / ref.jobsPerS }
        })
        .filter((x): x is { round: number; ratio: number } => x !== undefined)
      const perRound: number[] = []
      for (let r = 1; r <= settings.rounds; r++) {
        const xs = paired.filter((x) => x.round === r).map((x) => x.ratio)
        if (xs.length > 0) perRound.push(median(xs))
      }
      const defined = (xs: Array<number | undefined>) => xs.filter((x): x is number => x !== undefined)
      const redisCpu = defined(own.map((x) => x.redisCpuUs))
      const scripts = defined(own.map((x) => x.scriptsPerJob))
      const medianJobsPerS = median(own.map((x) => x.jobsPerS))
      rows.push({
        key: variant.key,
        label: variant.label,
        inFlight: mode.inFlight,
        jobsPerRound: settings.batches * mode.batch,
        batches: own,
        medianJobsPerS,
        medianUsPerJob: 1e6 / medianJobsPerS,
        ratio: paired.length === 0 ? undefined : median(paired.map((x) => x.ratio)),
        ratioRange: perRound.length === 0 ? undefined : [Math.min(...perRound), Math.max(...perRound)],
        clientCpuUs: median(own.map((x) => x.clientCpuUs)),
        redisCpuUs: redisCpu.length === 0 ? undefined : median(redisCpu),
        // The smallest: other clients of the shared Redis can only add scripts.
        scriptsPerJob: scripts.length === 0 ? undefined : Math.min(...scripts),
        checked: checks.get(variant.key) ?? false,
        error: failed.get(variant.key),
      })
    }
  }
  return { date: new Date().toISOString(), rounds: settings.rounds, rows }
}

// ------------------------------------------------------------------------------------- worker processes

class WorkerProcess {
  readonly child: ChildProcess
  readonly #waiters: Array<{ type: string; resolve(m: WorkerMessage): void; reject(e: Error): void }> = []
  #exited: Error | undefined
  onMessage: ((m: WorkerMessage) => void) | undefined

  constructor(readonly label: string) {
    const script = join(dirname(fileURLToPath(import.meta.url)), 'jobs-worker.js')
    this.child = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.child.on('message', (m: WorkerMessage) => {
      if (m.type === 'error') {
        const error = new Error(`${label} worker failed: ${m.message}`)
        for (const w of this.#waiters.splice(0)) w.reject(error)
        return
      }
      this.onMessage?.(m)
      const i = this.#waiters.findIndex((w) => w.type === m.type)
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m)
    })
    this.child.on('exit', (code) => {
      this.#exited = new Error(`${label} worker exited (code ${code})`)
      for (const w of this.#waiters.splice(0)) w.reject(this.#exited)
    })
  }

  /** Waits for the next message of `type` (registered before `send` so nothing is missed). */
  next<T extends WorkerMessage['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<WorkerMessage, { type: T }>> {
    if (this.#exited !== undefined) return Promise.reject(this.#exited)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(new Error(`${this.label} worker: no ${type} within ${(timeoutMs / 1_000).toFixed(0)} s`))
      }, timeoutMs)
      const waiter = {
        type,
        resolve: (m: WorkerMessage) => {
          clearTimeout(timer)
          resolve(m as Extract<WorkerMessage, { type: T }>)
        },
        reject: (e: Error) => {
          clearTimeout(timer)
          reject(e)
        },
      }
      this.#waiters.push(waiter)
    })
  }

  send(message: ParentMessage): void {
    this.child.send(message)
  }

  async request<T extends WorkerMessage['type']>(
    message: ParentMessage,
    reply: T,
    timeoutMs = 20_000,
  ): Promise<Extract<WorkerMessage, { type: T }>> {
    const answer = this.next(reply, timeoutMs)
    this.send(message)
    return answer
  }

  async stop(): Promise<void> {
    if (this.#exited !== undefined) return
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    try {
      await this.request({ type: 'stop' }, 'stopped', 15_000)
    } catch {
      this.child.kill('SIGKILL')
    }
    await exited
  }
}

interface Producer {
  enqueue(tenant: string, i: number): Promise<string>
  close(): Promise<void>
}

function producerFor(ctx: Context, mode: WorkerMode, name: string): Producer {
  if (mode === 'keel') {
    const keel: Keel = createJobsKeel({ primaryUrl: ctx.primaryUrl, redisUrl: ctx.redisUrl, queue: name })
    defineBenchJob(keel)
    return {
      enqueue: async (tenant, i) => (await keel.tenant(tenant).enqueue(JOB_NAME, payloadFor(i))).jobId,
      close: () => keel.close(),
    }
  }
  const { queue, close } = rawQueue(ctx, name)
  return {
    enqueue: async (tenant, i) =>
      String((await queue.add(JOB_NAME, { tenant, ...payloadFor(i) }, RAW_JOB_OPTS)).id),
    close,
  }
}

function workerInit(
  ctx: Context,
  mode: WorkerMode,
  record: InitMessage['record'],
  queue: string,
  extra: Partial<InitMessage>,
): InitMessage {
  return {
    type: 'init',
    mode,
    record,
    queue,
    redisUrl: ctx.redisUrl,
    primaryUrl: ctx.primaryUrl,
    concurrency: settings.workerConcurrency,
    handlerMs: 0,
    ...extra,
  }
}

const MODE_LABEL: Record<WorkerMode, string> = {
  raw: 'raw BullMQ `Queue.add` + `Worker`',
  keel: 'keel `db.enqueue` + `keel.startWorker`',
}

// ---------------------------------------------------------------------------------------------- latency

async function runLatency(ctx: Context): Promise<LatencyRecord> {
  const modes: WorkerMode[] = ['raw', 'keel']
  const sides = new Map<
    WorkerMode,
    {
      worker: WorkerProcess
      producer: Producer
      name: string
      seen: Map<string, { start?: number; done?: number }>
      waiting: Map<string, () => void>
      enqueue: number[]
      start: number[]
      completed: number[]
      error?: string
    }
  >()
  try {
    for (const mode of modes) {
      const name = `kj${ctx.runId}.lat-${mode}`
      const worker = new WorkerProcess(`latency ${mode}`)
      const side = {
        worker,
        producer: producerFor(ctx, mode, name),
        name,
        seen: new Map<string, { start?: number; done?: number }>(),
        waiting: new Map<string, () => void>(),
        enqueue: [] as number[],
        start: [] as number[],
        completed: [] as number[],
      }
      worker.onMessage = (m) => {
        if (m.type !== 'job-start' && m.type !== 'job-done') return
        const entry = side.seen.get(m.id) ?? {}
        if (m.type === 'job-start') entry.start = m.at
        else entry.done = m.at
        side.seen.set(m.id, entry)
        if (m.type === 'job-done') side.waiting.get(m.id)?.()
      }
      sides.set(mode, side)
      await worker.request(workerInit(ctx, mode, 'latency', name, {}), 'ready')
      await worker.request({ type: 'start' }, 'started')
    }
    const total = settings.latencyWarmupJobs + settings.latencyJobs
    for (let i = 0; i < total; i++) {
      // Alternate the two, one job at a time: each waits for the previous one's completion.
      const order = i % 2 === 0 ? modes : [...modes].reverse()
      for (const mode of order) {
        const side = sides.get(mode)!
        if (side.error !== undefined) continue
        try {
          let doneId: string | undefined
          let resolveDone: (() => void) | undefined
          const done = new Promise<void>((resolve) => {
            resolveDone = resolve
          })
          const t0 = monoMs()
          const id = await side.producer.enqueue('t-latency', i)
          const t1 = monoMs()
          doneId = id
          if (side.seen.get(id)?.done === undefined) side.waiting.set(id, resolveDone!)
          else resolveDone!()
          let timer: NodeJS.Timeout | undefined
          await Promise.race([
            done,
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`job ${doneId} not completed within 10 s`)), 10_000)
            }),
          ]).finally(() => clearTimeout(timer))
          side.waiting.delete(id)
          const entry = side.seen.get(id)!
          side.seen.delete(id)
          if (i >= settings.latencyWarmupJobs) {
            side.enqueue.push(t1 - t0)
            side.start.push((entry.start ?? Number.NaN) - t0)
            side.completed.push(entry.done! - t0)
          }
        } catch (error) {
          side.error = errorText(error)
          console.log(`  latency ${mode} failed: ${side.error}`)
        }
      }
    }
  } finally {
    for (const [, side] of sides) {
      await side.worker.stop()
      await side.producer.close().catch(() => undefined)
      await dropQueue(ctx.admin, side.name).catch(() => undefined)
    }
  }
  return {
    date: new Date().toISOString(),
    jobs: settings.latencyJobs,
    workerConcurrency: settings.workerConcurrency,
    rows: modes.map((mode) => {
      const side = sides.get(mode)
      return {
        key: mode,
        label: MODE_LABEL[mode],
        enqueueMs: summarize(side?.enqueue ?? []),
        startMs: summarize(side?.start ?? []),
        completedMs: summarize(side?.completed ?? []),
        error: side?.error ?? (side === undefined ? 'not set up' : undefined),
      }
    }),
  }
}

// --------------------------------------------------------------------------------------------- fairness

async function fairnessRun(ctx: Context, mode: WorkerMode, repeat: number): Promise<FairnessRun> {
  const name = `kj${ctx.runId}.fair-${mode}.${repeat}`
  const worker = new WorkerProcess(`fairness ${mode}`)
  const producer = producerFor(ctx, mode, name)
  let floodS = 0
  try {
    await worker.request(
      workerInit(ctx, mode, 'fairness', name, { handlerMs: settings.handlerMs, watchTenant: 'tenant-b' }),
      'ready',
    )
    // Tenant A's flood, 32 enqueues in flight, before any worker runs: the whole backlog is queued.
    const floodStarted = performance.now()
    let next = 0
    const caller = async (): Promise<void> => {
      while (next < settings.floodJobs) await producer.enqueue('tenant-a', next++)
    }
    await Promise.all(Array.from({ length: 32 }, caller))
    floodS = (performance.now() - floodStarted) / 1_000
    const busy = worker.next('busy', 30_000)
    await worker.request({ type: 'start' }, 'started')
    await busy
    // The worker is busy with A's jobs: now B enqueues its one job.
    const watched = worker.next('watched-start', settings.fairTimeoutS * 1_000)
    const bEnqueueAt = monoMs()
    await producer.enqueue('tenant-b', 0)
    const b = await watched
    const before = b.othersBefore.filter((t) => t < bEnqueueAt).length
    const first = b.othersBefore[0]
    // A's drain rate, when enough of A's jobs ran before B's to measure it.
    const aJobsPerS =
      first === undefined || b.othersBefore.length < 100
        ? undefined
        : (b.othersBefore.length * 1_000) / (b.at - first)
    return {
      repeat,
      waitMs: b.at - bEnqueueAt,
      aBeforeB: b.othersBefore.length,
      aAhead: b.othersBefore.length - before,
      aBacklog: settings.floodJobs - before,
      aJobsPerS,
      floodS,
    }
  } catch (error) {
    return {
      repeat,
      waitMs: undefined,
      aBeforeB: undefined,
      aAhead: undefined,
      aBacklog: undefined,
      aJobsPerS: undefined,
      floodS,
      error: errorText(error),
    }
  } finally {
    await worker.stop()
    await producer.close().catch(() => undefined)
    await dropQueue(ctx.admin, name).catch(() => undefined)
  }
}

async function runFairness(ctx: Context): Promise<FairnessRecord> {
  const modes: WorkerMode[] = ['keel', 'raw']
  const runs = new Map<WorkerMode, FairnessRun[]>(modes.map((m) => [m, []]))
  for (let r = 1; r <= settings.fairRepeats; r++) {
    const order = r % 2 === 1 ? modes : [...modes].reverse()
    for (const mode of order) {
      const run = await fairnessRun(ctx, mode, r)
      runs.get(mode)!.push(run)
      console.log(
        run.error === undefined
          ? `  repeat ${r}: ${mode.padEnd(4)} B waited ${fmt(run.waitMs, 0)} ms, while ${run.aAhead} of A's jobs started (A's backlog ${run.aBacklog})`
          : `  repeat ${r}: ${mode} failed: ${run.error}`,
      )
    }
  }
  return {
    date: new Date().toISOString(),
    floodJobs: settings.floodJobs,
    workerConcurrency: settings.workerConcurrency,
    handlerMs: settings.handlerMs,
    rows: modes.map((mode) => ({
      key: mode,
      label:
        mode === 'keel'
          ? "keel (fair priorities: each tenant's n-th pending job competes with every other's n-th)"
          : 'raw BullMQ FIFO (tenant only in the data): without keel’s scheduling',
      runs: runs.get(mode)!,
    })),
  }
}

// ----------------------------------------------------------------------------------------------- report

function rangeCell(row: EnqueueRow): string {
  if (row.key === 'raw') return '1.00x (reference)'
  if (row.ratio === undefined) return 'n/a'
  const [lo, hi] = row.ratioRange!
  return `${fmtRatio(row.ratio)} (${lo.toFixed(2)}–${hi.toFixed(2)})`
}

function enqueueTable(rec: EnqueueRecord): string {
  return markdownTable(
    [
      'variant',
      'in flight',
      'jobs/s (median)',
      'µs/job (wall)',
      'vs raw `Queue.add` (range)',
      'client CPU µs/job',
      'Redis CPU µs/job',
      'scripts/job',
      'queue checked',
    ],
    rec.rows.map((r) => [
      r.error === undefined ? r.label : `${r.label} — failed: ${r.error}`,
      String(r.inFlight),
      fmtInt(r.medianJobsPerS),
      fmt(r.medianUsPerJob, 1),
      rangeCell(r),
      fmt(r.clientCpuUs, 1),
      fmt(r.redisCpuUs, 1),
      fmt(r.scriptsPerJob, 2),
      r.batches.length === 0 ? 'n/a' : r.checked ? 'yes' : '**no**',
    ]),
    [false, true, true, true, true, true, true, true, false],
  )
}

function latencyTable(rec: LatencyRecord): string {
  const cell = (s: LatencySummary) => `${fmt(s.p50Ms, 2)} / ${fmt(s.p99Ms, 2)}`
  return markdownTable(
    [
      'variant',
      'jobs',
      'enqueue call p50 / p99 (ms)',
      'enqueue → handler start p50 / p99 (ms)',
      'enqueue → completed p50 / p99 (ms)',
    ],
    rec.rows.map((r) => [
      r.error === undefined ? r.label : `${r.label} — failed: ${r.error}`,
      String(r.completedMs.n),
      cell(r.enqueueMs),
      cell(r.startMs),
      cell(r.completedMs),
    ]),
    [false, true, true, true, true],
  )
}

function fairnessTable(rec: FairnessRecord): string {
  const list = (runs: FairnessRun[], f: (r: FairnessRun) => string) =>
    runs.map((r) => (r.error === undefined ? f(r) : 'failed')).join(', ')
  return markdownTable(
    [
      'variant',
      "B's wait, enqueue → start (ms)",
      "A's jobs started before B's: in all / after B's enqueue",
      `after B's enqueue, in batches of ${rec.workerConcurrency}`,
      "A's backlog when B enqueued",
      "A's jobs/s",
    ],
    rec.rows.map((row) => [
      row.label +
        (row.runs.some((r) => r.error !== undefined) ? ` — ${row.runs.find((r) => r.error)!.error}` : ''),
      list(row.runs, (r) => fmt(r.waitMs, 0)),
      list(row.runs, (r) => `${fmtInt(r.aBeforeB)} / ${fmtInt(r.aAhead)}`),
      list(row.runs, (r) => fmt((r.aAhead ?? Number.NaN) / rec.workerConcurrency, 1)),
      list(row.runs, (r) => fmtInt(r.aBacklog)),
      list(row.runs, (r) => fmtInt(r.aJobsPerS)),
    ]),
    [false, true, true, true, true, true],
  )
}

function findings(results: Results): string[] {
  const out: string[] = []
  const met = (ok: boolean) => (ok ? 'met' : '**missed**')
  const rows = results.enqueue?.rows ?? []
  const row = (key: string, inFlight: number) => rows.find((r) => r.key === key && r.inFlight === inFlight)
  const inFlight = results.meta.settings.inFlight
  const keelC = row('keel', inFlight)
  const keelS = row('keel', 1)
  if (keelC?.ratio !== undefined) {
    const raw = row('raw', inFlight)
    const idem = row('keel-idem', inFlight)
    const prio = row('raw-priority', inFlight)
    const hand = row('by-hand', inFlight)
    out.push(
      `Enqueue, ${inFlight} in flight: keel ${fmtInt(keelC.medianJobsPerS)} jobs/s vs raw \`Queue.add\` ${fmtInt(raw?.medianJobsPerS)}: ` +
        `${fmtRatio(keelC.ratio)} (target ≥ ${TARGETS.enqueueVsRaw}x: ${met(keelC.ratio >= TARGETS.enqueueVsRaw)})` +
        (keelS?.ratio === undefined
          ? ''
          : `; one at a time ${fmtRatio(keelS.ratio)} (${fmt(keelS.medianUsPerJob, 0)} vs ${fmt(row('raw', 1)?.medianUsPerJob, 0)} µs per enqueue, ${met(keelS.ratio >= TARGETS.enqueueVsRaw)})`) +
        (idem?.ratio === undefined ? '' : `; with an idempotencyKey ${fmtRatio(idem.ratio)}`) +
        (prio?.ratio === undefined
          ? ''
          : `. Raw \`Queue.add\` with a priority alone is ${fmtRatio(prio.ratio)}`) +
        (hand?.ratio === undefined
          ? ''
          : `, two round trips by hand (keel's fallback) ${fmtRatio(hand.ratio)}`),
    )
  }
  const lat = results.latency?.rows ?? []
  const lr = lat.find((r) => r.key === 'raw')
  const lk = lat.find((r) => r.key === 'keel')
  if (lr !== undefined && lk !== undefined && lk.error === undefined && lr.error === undefined) {
    out.push(
      `Latency, one job at a time: enqueue → handler start p50 ${fmt(lk.startMs.p50Ms, 2)} ms with keel vs ${fmt(lr.startMs.p50Ms, 2)} ms raw ` +
        `(p99 ${fmt(lk.startMs.p99Ms, 2)} vs ${fmt(lr.startMs.p99Ms, 2)}); enqueue → completed p50 ${fmt(lk.completedMs.p50Ms, 2)} vs ${fmt(lr.completedMs.p50Ms, 2)} ms ` +
        `(p99 ${fmt(lk.completedMs.p99Ms, 2)} vs ${fmt(lr.completedMs.p99Ms, 2)})`,
    )
  }
  const fair = results.fairness
  if (fair !== undefined) {
    const describe = (key: WorkerMode) => {
      const runs = fair.rows.find((r) => r.key === key)?.runs.filter((r) => r.error === undefined) ?? []
      if (runs.length === 0) return undefined
      return (
        `B waited ${runs.map((r) => fmt(r.waitMs, 0)).join(' / ')} ms, while ${runs.map((r) => fmtInt(r.aAhead)).join(' / ')} of A's jobs started ` +
        `(A's backlog when B enqueued: ${runs.map((r) => fmtInt(r.aBacklog)).join(' / ')})`
      )
    }
    const k = describe('keel')
    const r = describe('raw')
    if (k !== undefined || r !== undefined) {
      out.push(
        `Fairness (A flooded ${fmtInt(fair.floodJobs)} jobs of ~${fair.handlerMs} ms, worker concurrency ${fair.workerConcurrency}): ` +
          `with keel ${k ?? 'n/a'}; with raw BullMQ FIFO ${r ?? 'n/a'}`,
      )
    }
  }
  return out
}

function when(iso: string): string {
  return `Measured ${iso.slice(0, 16).replace('T', ' ')} UTC`
}

function renderMarkdown(results: Results): string {
  const m = results.meta
  const v = m.versions
  const s = m.settings
  const parts: string[] = []
  parts.push(
    `Measured ${m.date.slice(0, 10)} on ${m.cores} cores (${m.cpuModel}), Node ${m.node}, Redis ${m.redis} on loopback (the local stack's). ` +
      `@keel/core ${v['@keel/core']} (bullmq ${v['bullmq (keel)']}, ioredis ${v['ioredis (keel)']}, zod ${v['zod (keel)']}); raw: bullmq ${v.bullmq}, ioredis ${v.ioredis}. ` +
      'No OpenTelemetry SDK is registered: keel’s PRODUCER span is a no-op one. ' +
      `Load average ${m.loadAverage.join(' / ')} at the start${m.loadAverageEnd === undefined ? '' : `, ${m.loadAverageEnd.join(' / ')} at the end`}: the machine is shared, so absolute numbers move from run to run; the paired ratios move much less.` +
      (results.totalS === undefined ? '' : ` The whole run took ${results.totalS.toFixed(0)} s.`),
  )
  const summary = findings(results)
  if (summary.length > 0) parts.push(summary.map((line) => `- ${line}`).join('\n'))
  if (results.enqueue !== undefined) {
    const r = results.enqueue
    parts.push(
      `### Enqueue throughput\n\n${when(r.date)}: ${r.rounds} rounds per mode (${s.inFlight} enqueues in flight, then one at a time), after one unrecorded warm-up round. ` +
        `In each round every variant gets a fresh queue of its own and ${s.warmupJobs} warm-up enqueues, then enqueues ${s.batches} batches of ${fmtInt(s.batchJobs)} jobs (${fmtInt(s.sequentialBatchJobs)} one at a time), ` +
        'interleaved batch by batch with the other variants (one batch of each in turn, the order reversed every cycle), so the load of this shared 2-core machine weighs on every row alike. ' +
        `The jobs rotate over ${s.tenants} tenants; the payload (\`{ invoiceId, amountCents, locale }\`) is checked by a zod schema in keel. ` +
        'Raw `Queue.add` passes what a typical user would, set like keel: `attempts: 4`, exponential backoff from 1 s, `removeOnComplete: { age: 86400 }`, `removeOnFail: { age: 604800 }`, the tenant in the data. ' +
        "jobs/s: median over batches. Ratios are paired: each batch over raw `Queue.add`'s batch of the same cycle, median over all cycles (range: the per-round medians). " +
        "Client CPU: this process's CPU time per job (all threads); Redis CPU: the server's (INFO cpu, other clients of the shared Redis included); scripts/job: EVALSHA + EVAL calls per job (INFO commandstats: round trips that run Lua; keel's idempotency claim runs inside its script). " +
        'Queue checked: every queue held exactly its warm-up + measured jobs afterwards. ' +
        "keel's `db.enqueue` is one script per job: BullMQ's own add script with keel's claim and fair position spliced in (ADR 0019); the by-hand row is the two round trips keel made before, and makes in its fallback.\n\n" +
        enqueueTable(r),
    )
  }
  if (results.latency !== undefined) {
    const r = results.latency
    parts.push(
      `### End-to-end latency, one job at a time\n\n${when(r.date)}: each variant's worker runs in its own process (forked, concurrency ${r.workerConcurrency}, a handler that returns at once); ` +
        `the producer here enqueues one job, waits for it to complete, then enqueues the next, alternating the two variants (${r.jobs} measured jobs each, after ${s.latencyWarmupJobs} warm-up ones). ` +
        'The worker stamps the handler start and the `completed` event (after BullMQ moved the job to completed) with CLOCK_MONOTONIC, which both processes share, and reports them over IPC, so IPC delivery is not counted. ' +
        'Times run from just before the enqueue call.\n\n' +
        latencyTable(r),
    )
  }
  if (results.fairness !== undefined) {
    const r = results.fairness
    parts.push(
      `### Fairness: one tenant's flood\n\n${when(r.date)}: tenant A enqueues ${fmtInt(r.floodJobs)} jobs (32 in flight) before the worker starts; the worker (its own process, concurrency ${r.workerConcurrency}, each handler waits ${r.handlerMs} ms) starts; ` +
        `once ${r.workerConcurrency} of A's jobs have started, tenant B enqueues one job. B's wait runs from just before its enqueue call to its handler's start; ` +
        "A's jobs started before B's: all of them, then those that started after B's enqueue began (the first are the ones the worker was already running). One value per repeat, the two variants alternated.\n\n" +
        fairnessTable(r),
    )
  }
  return `${parts.join('\n\n')}\n`
}

// ------------------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const scenarios = parseScenarios(process.argv[2])
  const started = performance.now()
  const stack = readStack()
  if (stack.redis === undefined) throw new Error('the stack has no Redis: run `node scripts/stack.mjs up`')
  const redisUrl = stack.redis.url
  const admin = producerRedis(redisUrl)
  const info = await admin.info('server')
  const runId = randomBytes(4).toString('hex')
  const meta: Meta = {
    ...machineMeta(),
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    redisUrl: redisUrl.replace(/\/\/[^@/]*@/, '//'),
    runId,
    versions: jobsLibraryVersions(),
    settings,
  }
  const ctx: Context = { redisUrl, primaryUrl: stack.primary.url, runId, admin }
  console.log(
    `keel jobs bench: ${meta.cores} cores, Node ${meta.node}, Redis ${meta.redis} at ${meta.redisUrl}, run ${runId}\n` +
      `versions: ${Object.entries(meta.versions)
        .map(([k, x]) => `${k} ${x}`)
        .join(', ')}\nscenarios: ${scenarios.join(', ')}`,
  )
  const results: Results = { ...previousResults<Results>('jobs'), meta }
  let broken = false
  try {
    if (scenarios.includes('enqueue')) {
      console.log('\nenqueue throughput:')
      results.enqueue = await runEnqueue(ctx)
      console.log(`\n## Enqueue throughput\n\n${enqueueTable(results.enqueue)}`)
      if (results.enqueue.rows.some((r) => r.error !== undefined || !r.checked)) broken = true
    }
    if (scenarios.includes('latency')) {
      console.log('\nend-to-end latency:')
      results.latency = await runLatency(ctx)
      console.log(`\n## End-to-end latency, one job at a time\n\n${latencyTable(results.latency)}`)
      if (results.latency.rows.some((r) => r.error !== undefined)) broken = true
    }
    if (scenarios.includes('fairness')) {
      console.log('\nfairness:')
      results.fairness = await runFairness(ctx)
      console.log(`\n## Fairness: one tenant's flood\n\n${fairnessTable(results.fairness)}`)
      if (results.fairness.rows.some((r) => r.runs.some((x) => x.error !== undefined))) broken = true
    }
  } finally {
    const deleted = await cleanup(admin, runId).catch(() => 0)
    console.log(`\n(removed ${deleted} leftover Redis keys of run ${runId})`)
    await admin.quit().catch(() => undefined)
  }
  return finishRun('jobs', 'keel jobs benchmark', results, started, findings, renderMarkdown, broken)
}

runMain(main)
