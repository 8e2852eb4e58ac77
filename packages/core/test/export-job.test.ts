import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ExportJobProgress,
  type ExportJobResult,
  exportJob,
  fileSink,
  isKeelError,
  type JobWorker,
  type Keel,
} from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers } from './support/worker.js'

// exportJob(): a tenant's tables exported by a keel job into a sink, with progress; a crashed worker's
// export restarts cleanly elsewhere; a failing sink fails the job and frees the connection.
const here = dirname(fileURLToPath(import.meta.url))
const orders = 'export_job_orders'
const lines = 'export_job_lines'
const app = 'keel-export-job-test'
const MEGA_ORDERS = 110_000
const MEGA_LINES = 15_000
const queue = `exportjob${randomBytes(4).toString('hex')}`
const dir = mkdtempSync(join(tmpdir(), 'keel-export-job-'))
let keel: Keel
let worker: JobWorker
let su: pg.Client
const children: ChildProcess[] = []
const progressSeen = new Map<string, ExportJobProgress[]>()
const failures = new Map<string, unknown>()

const target = (jobId: string) => join(dir, `${jobId}.ndjson`)

/** A sink that accepts `okWrites` chunks, then fails. */
const breakingSink = (okWrites: number) => () => {
  let writes = 0
  return new Writable({
    write(_chunk, _encoding, callback) {
      writes++
      callback(writes > okWrites ? new Error('disk full (test)') : null)
    },
  })
}

beforeAll(async () => {
  await createRlsTable(orders)
  await createRlsTable(lines)
  su = await connect('super')
  await su.query(
    `INSERT INTO ${orders} (tenant_id, body, n) SELECT 'mega', 'order ' || g, g FROM generate_series(1, ${MEGA_ORDERS}) g`,
  )
  await su.query(
    `INSERT INTO ${lines} (tenant_id, body, n) SELECT 'mega', 'line ' || g, g FROM generate_series(1, ${MEGA_LINES}) g`,
  )
  // Another tenant's rows interleaved in the same tables.
  await su.query(
    `INSERT INTO ${orders} (tenant_id, body, n) SELECT 'small', 'not yours', g FROM generate_series(1, 5000) g`,
  )
  await su.query(`INSERT INTO ${lines} (tenant_id, body, n) SELECT 'small', 'not yours', 1`)
  await su.query(`ANALYZE ${orders}; ANALYZE ${lines}`)
  keel = testKeel({
    applicationName: app,
    pool: { max: 4 },
    jobs: { redis: { url: readStack().redis.url }, queue, lockDurationMs: 2_000, closeTimeoutMs: 2_000 },
  })
  keel.defineJob(
    'tenant.export',
    exportJob({
      sink: fileSink(({ jobId }) => target(jobId)),
      tables: [orders, lines],
      progressIntervalMs: 0,
      batchSize: 500,
    }),
  )
  keel.defineJob('tenant.export-broken', exportJob({ sink: breakingSink(3), retries: 0, batchSize: 500 }))
  keel.defineJob(
    'tenant.export-no-sink',
    exportJob({
      sink: () => {
        throw new Error('no bucket (test)')
      },
      retries: 0,
    }),
  )
  keel.defineJob(
    'tenant.export-no-writable',
    exportJob({ sink: () => ({}) as unknown as Writable, retries: 0, estimate: 'none' }),
  )
}, 300_000)

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
  await keel.close()
  await su.end()
  for (const t of [orders, lines]) await dropTable(t)
  rmSync(dir, { recursive: true, force: true })
})

function startLocalWorker(): JobWorker {
  const started = keel.startWorker({ concurrency: 2 })
  started.on('progress', (job, progress) => {
    const seen = progressSeen.get(String(job.id)) ?? []
    seen.push(progress as ExportJobProgress)
    progressSeen.set(String(job.id), seen)
  })
  started.on('failed', (job, error) => {
    if (job !== undefined) failures.set(String(job.id), error)
  })
  return started
}

/** The ndjson file's rows per table, checking each line's shape. */
function readExport(path: string): Map<string, Array<{ tenant_id: string; n: number; id: string }>> {
  const byTable = new Map<string, Array<{ tenant_id: string; n: number; id: string }>>()
  const text = readFileSync(path, 'utf8')
  expect(text.endsWith('\n')).toBe(true)
  for (const line of text.slice(0, -1).split('\n')) {
    const { table, row } = JSON.parse(line) as {
      table: string
      row: { tenant_id: string; n: number; id: string }
    }
    const rows = byTable.get(table) ?? []
    rows.push(row)
    byTable.set(table, rows)
  }
  return byTable
}

function expectExactlyMega(path: string): void {
  const byTable = readExport(path)
  expect([...byTable.keys()]).toEqual([orders, lines])
  for (const [table, count] of [
    [orders, MEGA_ORDERS],
    [lines, MEGA_LINES],
  ] as const) {
    const rows = byTable.get(table)!
    expect(rows.length).toBe(count)
    expect(rows.every((r) => r.tenant_id === 'mega')).toBe(true)
    expect(new Set(rows.map((r) => r.id)).size).toBe(count)
    expect(new Set(rows.map((r) => r.n)).size).toBe(count)
  }
}

async function expectNoneInTransaction(): Promise<void> {
  await waitFor('no connection idle in transaction', async () => {
    const r = await su.query<{ state: string | null }>(
      'SELECT state FROM pg_stat_activity WHERE application_name = $1',
      [app],
    )
    return r.rows.every((s) => s.state === 'idle' || s.state === null)
  })
}

describe('exportJob', () => {
  it('validates its options and the payload at enqueue (nothing enqueued)', async () => {
    const code = (fn: () => unknown) => {
      try {
        fn()
      } catch (error) {
        return isKeelError(error) ? error.code : String(error)
      }
      return 'no error'
    }
    expect(code(() => exportJob({} as never))).toBe('KEEL_JOB_INVALID')
    expect(code(() => exportJob({ sink: () => new Writable(), tables: ['public.x'] }))).toBe(
      'KEEL_JOB_INVALID',
    )
    expect(code(() => fileSink(42 as never))).toBe('KEEL_JOB_INVALID')
    for (const maxRowsPerSecond of [0, -1, Number.POSITIVE_INFINITY]) {
      expect(code(() => exportJob({ sink: () => new Writable(), maxRowsPerSecond }))).toBe('KEEL_JOB_INVALID')
    }
    const db = keel.tenant('mega')
    for (const payload of [
      { tables: ['pg_authid'] },
      { tables: [] },
      { tables: [orders, lines], format: 'csv' },
      { tables: [orders], format: 'xml' },
      { tables: [orders], extra: 1 },
    ]) {
      const error = await db.enqueue('tenant.export', payload).catch((e: unknown) => e)
      expect(isKeelError(error, 'KEEL_JOB_PAYLOAD_INVALID'), JSON.stringify(payload)).toBe(true)
    }
  })

  it('exports a 125k-row tenant to a file: exactly its rows, progress increasing to the end', async () => {
    worker = startLocalWorker()
    const db = keel.tenant('mega')
    const { jobId } = await db.enqueue('tenant.export', { tables: [orders, lines] })
    await waitFor(
      'the export to complete',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
      120_000,
    )
    const status = await db.jobStatus(jobId)
    const result = status?.result as ExportJobResult
    expect(result.rows).toBe(MEGA_ORDERS + MEGA_LINES)
    expect(result.tables).toEqual({ [orders]: MEGA_ORDERS, [lines]: MEGA_LINES })
    expect(result.bytes).toBe(readFileSync(target(jobId)).length)
    expectExactlyMega(target(jobId))
    // Progress: rows increase batch by batch against the count taken at the start, ending at 100%.
    const seen = progressSeen.get(jobId)!.map((p) => p.rows)
    expect(seen.length).toBeGreaterThan(100)
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThanOrEqual(seen[i - 1]!)
    const mid = progressSeen.get(jobId)!.find((p) => p.rows > 0 && p.rows < MEGA_ORDERS + MEGA_LINES)
    expect(mid?.estimatedRows).toBe(MEGA_ORDERS + MEGA_LINES)
    expect(status?.progress).toMatchObject({ rows: MEGA_ORDERS + MEGA_LINES, percent: 100 })
    // Only the target: no temp file left behind.
    expect(readdirSync(dir).filter((f) => f.endsWith('.part'))).toEqual([])
    // The small tenant's own export has only its rows.
    const small = keel.tenant('small')
    const second = await small.enqueue('tenant.export', { tables: [lines] })
    await waitFor(
      'the small export',
      async () => (await small.jobStatus(second.jobId))?.state === 'completed',
    )
    const smallRows = readExport(target(second.jobId)).get(lines)!
    expect(smallRows.map((r) => r.tenant_id)).toEqual(['small'])
    expect(await db.jobStatus(second.jobId)).toBeNull()
  }, 180_000)

  it('a sink that fails fails the job with KEEL_EXPORT_SINK_FAILED and gives the connection back', async () => {
    const db = keel.tenant('mega')
    for (const name of ['tenant.export-broken', 'tenant.export-no-sink', 'tenant.export-no-writable']) {
      const { jobId } = await db.enqueue(name, { tables: [orders] })
      await waitFor(`${name} to fail`, async () => (await db.jobStatus(jobId))?.state === 'failed')
      expect(isKeelError(failures.get(jobId), 'KEEL_EXPORT_SINK_FAILED'), name).toBe(true)
      expect((await db.jobStatus(jobId))?.error).toMatch(/sink failed/)
    }
    const broken = failures.values().next().value as Error
    expect((broken.cause as Error).message).toBe('disk full (test)')
    await expectNoneInTransaction()
    // The pool serves both tenants, scoped, afterwards.
    const counts = await Promise.all(
      ['mega', 'small', 'mega', 'small', 'mega'].map((t) =>
        keel
          .tenant(t)
          .query<{ n: string; t: string }>(`SELECT count(*)::text AS n, min(tenant_id) AS t FROM ${orders}`),
      ),
    )
    expect(counts.map((r) => r.rows[0])).toEqual([
      { n: String(MEGA_ORDERS), t: 'mega' },
      { n: '5000', t: 'small' },
      { n: String(MEGA_ORDERS), t: 'mega' },
      { n: '5000', t: 'small' },
      { n: String(MEGA_ORDERS), t: 'mega' },
    ])
  }, 60_000)

  it('a worker SIGKILLed mid-export: the job runs again elsewhere, the file is complete, nothing duplicated', async () => {
    // Only the child runs jobs until it is killed.
    await worker.close()
    const dist = buildForWorkers()
    const stack = readStack()
    const child = spawn(
      process.execPath,
      [
        join(here, 'fixtures/export-worker.mjs'),
        JSON.stringify({
          dist,
          pgUrl: stack.primary.url,
          redisUrl: stack.redis.url,
          queue,
          dir,
          delayMs: 20,
        }),
      ],
      { cwd: join(here, '..'), stdio: ['pipe', 'pipe', 'inherit'] },
    )
    children.push(child)
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`export worker exited with ${code}`)))
      createInterface({ input: child.stdout! }).once('line', () => resolve())
    })
    const db = keel.tenant('mega')
    const { jobId } = await db.enqueue('tenant.export', { tables: [orders, lines] })
    await waitFor(
      'the child to be part-way through',
      async () =>
        (((await db.jobStatus(jobId))?.progress as ExportJobProgress | undefined)?.rows ?? 0) >= 5_000,
      60_000,
    )
    child.kill('SIGKILL')
    await new Promise((r) => child.once('exit', r))
    const partial = (await db.jobStatus(jobId))?.progress as ExportJobProgress
    expect(partial.rows).toBeLessThan(MEGA_ORDERS + MEGA_LINES)
    expect(existsSync(target(jobId))).toBe(false)
    // The killed attempt's temp file is there (a SIGKILL runs no cleanup); the target is not.
    expect(readdirSync(dir).filter((f) => f.endsWith('.part')).length).toBe(1)
    worker = startLocalWorker()
    await waitFor(
      'the export to complete in this process',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
      120_000,
    )
    expectExactlyMega(target(jobId))
    // This process restarted from row 0 (ADR 0045): its progress began again below where the child stopped.
    expect(progressSeen.get(jobId)![0]!.rows).toBeLessThan(partial.rows)
    await expectNoneInTransaction()
  }, 240_000)
})
