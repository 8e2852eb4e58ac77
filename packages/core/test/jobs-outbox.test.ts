import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { applyJobOutbox, isKeelError, type Keel } from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { ensureTestRedis, testRedis, testRedisClient } from './support/redis-topology.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers } from './support/worker.js'

const here = dirname(fileURLToPath(import.meta.url))
const table = 'outbox_items'
let redis: ReturnType<typeof testRedisClient>
const open: Keel[] = []

function outboxKeel(queue: string, connectionString?: string): Keel {
  const keel = testKeel({
    ...(connectionString === undefined ? {} : { connectionString }),
    jobs: {
      redis: testRedis(),
      queue,
      outbox: true,
      outboxSweepMs: 200,
      closeTimeoutMs: 2_000,
    },
  })
  keel.defineJob('outbox.count', {
    schema: z.object({ body: z.string() }),
    handler: async ({ body }, { db }) => {
      const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE body = $1`, [
        body,
      ])
      await redis.incr(`${queue}:runs:${body}`)
      return r.rows[0]?.n
    },
  })
  open.push(keel)
  return keel
}

async function outboxRows(): Promise<number> {
  const su = await connect('super')
  try {
    // This file's job only: another suite's app may leave rows of its own jobs for its own workers.
    return Number(
      (await su.query("SELECT count(*) AS n FROM keel_job_outbox WHERE name = 'outbox.count'")).rows[0]?.n,
    )
  } finally {
    await su.end()
  }
}

beforeAll(async () => {
  await ensureTestRedis()
  redis = testRedisClient()
  const owner = await connect('owner')
  await applyJobOutbox(owner, { role: 'keel_app' })
  await owner.end()
  await createRlsTable(table)
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})
afterAll(async () => {
  await dropTable(table)
  await redis.quit()
})

describe('transactional enqueue (outbox)', () => {
  it('a committed transaction delivers its job, which sees the transaction’s write', async () => {
    const queue = `ob${randomBytes(4).toString('hex')}`
    const keel = outboxKeel(queue)
    keel.startWorker()
    const db = keel.tenant('acme')
    const body = `committed-${queue}`
    const { jobId } = await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', $1)`, [body])
      return tx.enqueue('outbox.count', { body })
    })
    await waitFor('the job to complete', async () => (await db.jobStatus(jobId))?.state === 'completed')
    expect((await db.jobStatus(jobId))?.result).toBe(1)
    await waitFor('the outbox to empty', async () => (await outboxRows()) === 0)
  })

  it('a rolled-back transaction enqueues nothing', async () => {
    const queue = `ob${randomBytes(4).toString('hex')}`
    const keel = outboxKeel(queue)
    keel.startWorker()
    const db = keel.tenant('acme')
    let jobId = ''
    await expect(
      db.transaction(async (tx) => {
        jobId = (await tx.enqueue('outbox.count', { body: 'never' })).jobId
        throw new Error('validation failed later in the request')
      }),
    ).rejects.toThrow('validation failed')
    await new Promise((r) => setTimeout(r, 600)) // several sweeps
    expect(await db.jobStatus(jobId)).toBeNull()
    expect(await outboxRows()).toBe(0)
    expect(await redis.get(`${queue}:runs:never`)).toBeNull()
  })

  it('a producer killed right after COMMIT still delivers the job, exactly once (a worker sweeps it)', async () => {
    const queue = `ob${randomBytes(4).toString('hex')}`
    const body = `crashed-${queue}`
    const stack = readStack()
    const child = spawn(
      process.execPath,
      [
        join(here, 'fixtures/outbox-producer.mjs'),
        JSON.stringify({
          dist: buildForWorkers(),
          pgUrl: stack.primary.url,
          redisUrl: stack.redis.url,
          redis: testRedis(),
          queue,
          body,
        }),
      ],
      { cwd: join(here, '..'), stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const line = await new Promise<string>((resolve) =>
      createInterface({ input: child.stdout! }).once('line', resolve),
    )
    const { jobId } = JSON.parse(line) as { jobId: string }
    const signal = await new Promise((resolve) => child.once('exit', (_code, s) => resolve(s)))
    expect(signal).toBe('SIGKILL')
    expect(await outboxRows()).toBe(1) // committed, never relayed
    const keel = outboxKeel(queue)
    const db = keel.tenant('acme')
    expect(await db.jobStatus(jobId)).toBeNull()
    keel.startWorker()
    await waitFor(
      'the swept job to complete',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
      30_000,
    )
    expect((await db.jobStatus(jobId))?.result).toBe(1)
    await new Promise((r) => setTimeout(r, 600))
    expect(Number(await redis.get(`${queue}:runs:${body}`))).toBe(1)
    expect(await outboxRows()).toBe(0)
  }, 60_000)
})

describe('the outbox trusts no setting the runtime role can set (ADR 0025)', () => {
  it("globex, with keel.outbox_relay on, sees and deletes none of acme's pending jobs", async () => {
    const su = await connect('super')
    const ids = [
      `acme-pending-${randomBytes(4).toString('hex')}`,
      `acme-pending-${randomBytes(4).toString('hex')}`,
    ]
    for (const id of ids) {
      await su.query(
        `INSERT INTO keel_job_outbox (tenant_id, id, name, payload, options) VALUES ('acme', $1, 'outbox.count', '{"body":"x"}', '{}')`,
        [id],
      )
    }
    const acmeRows = async () =>
      Number(
        (await su.query(`SELECT count(*) AS n FROM keel_job_outbox WHERE id = ANY($1)`, [ids])).rows[0]?.n,
      )
    try {
      // Through keel, as globex: the transaction-local variant, in one statement and in a transaction.
      const keel = outboxKeel(`ob${randomBytes(4).toString('hex')}`)
      const globex = keel.tenant('globex')
      // keel may refuse the statement outright (it sets a setting); what it must never do is show the rows.
      const refused = (error: unknown) => {
        if (isKeelError(error, 'KEEL_QUERY_INVALID')) return { rows: [], rowCount: 0 }
        throw error
      }
      const seen = await globex
        .query<{ tenant_id: string }>(
          "SELECT set_config('keel.outbox_relay', 'on', true), * FROM keel_job_outbox",
        )
        .catch(refused)
      expect(seen.rows.filter((r) => r.tenant_id === 'acme')).toEqual([])
      const deleted = await globex
        .transaction(async (tx) => {
          await tx.query("SELECT set_config('keel.outbox_relay', 'on', true)")
          return tx.query("DELETE FROM keel_job_outbox WHERE tenant_id = 'acme'")
        })
        .catch(refused)
      expect(deleted.rowCount).toBe(0)
      // A raw client of the runtime role, at session level, with and without a tenant of its own.
      const app = await connect('app')
      try {
        await app.query("SELECT set_config('keel.outbox_relay', 'on', false)")
        expect((await app.query('SELECT * FROM keel_job_outbox')).rows).toEqual([])
        await app.query("SELECT set_config('app.tenant_id', 'globex', false)")
        expect((await app.query("SELECT * FROM keel_job_outbox WHERE tenant_id = 'acme'")).rows).toEqual([])
        expect((await app.query("DELETE FROM keel_job_outbox WHERE tenant_id = 'acme'")).rowCount).toBe(0)
        expect(
          (await app.query("UPDATE keel_job_outbox SET name = 'x' WHERE tenant_id = 'acme'")).rowCount,
        ).toBe(0)
      } finally {
        await app.end()
      }
      expect(await acmeRows()).toBe(2)
    } finally {
      await su.query('DELETE FROM keel_job_outbox WHERE id = ANY($1)', [ids])
      await su.end()
    }
  })
})

describe('the documented outbox set-up, end to end', () => {
  const load = 'outbox_load'
  const role = `keel_ob_${randomBytes(4).toString('hex')}`
  let roleUrl = ''
  let dist = ''

  beforeAll(async () => {
    dist = buildForWorkers()
    await createRlsTable(load)
    const su = await connect('super')
    const owner = await connect('owner')
    try {
      // A runtime role with exactly what the docs tell users to grant: its own table's privileges, and
      // what applyJobOutbox grants. No default privileges (the stack's keel_app has more).
      await su.query(
        `CREATE ROLE ${role} LOGIN PASSWORD 'outbox' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE`,
      )
      await su.query(`GRANT CONNECT ON DATABASE keel TO ${role}`)
      await owner.query(`GRANT USAGE ON SCHEMA public TO ${role}`)
      await owner.query(`GRANT SELECT, INSERT ON ${load} TO ${role}`)
      await owner.query(`GRANT USAGE ON SEQUENCE ${load}_id_seq TO ${role}`)
      await applyJobOutbox(owner, { role })
    } finally {
      await owner.end()
      await su.end()
    }
    const url = new URL(readStack().primary.url)
    url.username = role
    url.password = 'outbox'
    roleUrl = url.toString()
  })
  afterAll(async () => {
    await dropTable(load)
    const su = await connect('super')
    try {
      await su.query(`DROP OWNED BY ${role}`)
      await su.query(`DROP ROLE ${role}`)
    } finally {
      await su.end()
    }
  })

  /** Runs the loaded producer until it has committed at least `commits` transactions, then SIGKILLs it. */
  async function crashProducer(queue: string, run: string, commits: number): Promise<void> {
    const stack = readStack()
    const child = spawn(
      process.execPath,
      [
        join(here, 'fixtures/outbox-load.mjs'),
        JSON.stringify({ dist, pgUrl: roleUrl, redisUrl: stack.redis.url, redis: testRedis(), queue, run }),
      ],
      { cwd: join(here, '..'), stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)))
    await new Promise<void>((resolve) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (Number(line) >= commits) resolve()
      })
      child.once('exit', () => resolve())
    })
    child.kill('SIGKILL')
    expect(await exited).toBe('SIGKILL')
  }

  it('a producer SIGKILLed under load: every committed job runs exactly once', async () => {
    const queue = `ob${randomBytes(4).toString('hex')}`
    const su = await connect('super')
    const pending = async () =>
      Number(
        (await su.query("SELECT count(*) AS n FROM keel_job_outbox WHERE name = 'outbox.load'")).rows[0]?.n,
      )
    try {
      // Crash until a crash left committed rows that no relay moved (a few per crash, most of the time).
      let crashes = 0
      while ((await pending()) === 0 && crashes < 5) await crashProducer(queue, `r${crashes++}`, 300)
      const orphans = await pending()
      expect(orphans).toBeGreaterThan(0)
      const committed = (await su.query<{ body: string }>(`SELECT body FROM ${load}`)).rows.map((r) => r.body)
      const worker = testKeel({
        connectionString: roleUrl,
        jobs: {
          redis: testRedis(),
          queue,
          outbox: true,
          outboxSweepMs: 200,
          closeTimeoutMs: 2_000,
        },
      })
      open.push(worker)
      worker.defineJob('outbox.load', {
        schema: z.object({ body: z.string() }),
        handler: async ({ body }) => {
          await redis.hincrby(`${queue}:runs`, body, 1)
        },
      })
      worker.startWorker({ concurrency: 20 })
      await waitFor(
        'every committed job to run',
        async () => (await redis.hlen(`${queue}:runs`)) >= committed.length,
        60_000,
      )
      await waitFor('the outbox to empty', async () => (await pending()) === 0)
      await new Promise((r) => setTimeout(r, 600)) // several more sweeps: nothing runs twice
      const runs = await redis.hgetall(`${queue}:runs`)
      console.log(
        `outbox crash: ${committed.length} transactions committed over ${crashes} SIGKILLed producer(s), ${orphans} of their jobs left in the outbox (never relayed); after the sweep, ${Object.keys(runs).length} jobs ran`,
      )
      expect(Object.keys(runs).sort()).toEqual([...committed].sort())
      expect(Object.entries(runs).filter(([, n]) => n !== '1')).toEqual([])
    } finally {
      await su.end()
    }
  }, 180_000)
})

class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

describe('a failing outbox sweep is visible', () => {
  it('is logged (signal outbox_sweep_failed, with the SQLSTATE) and counted (keel.jobs.outbox.sweep.failures)', async () => {
    const owner = await connect('owner')
    // The sweep's one cross-tenant call, refused: what a role set up for an older keel gets (42501).
    await owner.query(
      'REVOKE EXECUTE ON FUNCTION keel_job_outbox_tenants(double precision, integer) FROM keel_app',
    )
    try {
      const logged: Array<Record<string, unknown>> = []
      const log = (obj: object) => {
        logged.push(obj as Record<string, unknown>)
      }
      const reader = new TestReader()
      const keel = testKeel({
        jobs: {
          redis: testRedis(),
          queue: `ob${randomBytes(4).toString('hex')}`,
          outbox: true,
          outboxSweepMs: 200,
          closeTimeoutMs: 2_000,
        },
        logger: { debug: log, info: log, warn: log, error: log },
        telemetry: { meterProvider: new MeterProvider({ readers: [reader] }) },
      })
      open.push(keel)
      keel.defineJob('outbox.count', {
        schema: z.object({ body: z.string() }),
        handler: async () => undefined,
      })
      keel.startWorker()
      await waitFor('a failed sweep to be logged', () =>
        logged.some((o) => o.signal === 'outbox_sweep_failed'),
      )
      const failure = logged.find((o) => o.signal === 'outbox_sweep_failed')!
      expect((failure.err as { code?: string }).code).toBe('42501')
      const { resourceMetrics } = await reader.collect()
      const counter = resourceMetrics.scopeMetrics
        .flatMap((m) => m.metrics)
        .find((m) => m.descriptor.name === 'keel.jobs.outbox.sweep.failures')
      expect(counter?.dataPoints[0]?.attributes).toEqual({ 'error.type': '42501' })
      expect(counter?.dataPoints[0]?.value).toBeGreaterThanOrEqual(1)
    } finally {
      await owner.query(
        'GRANT EXECUTE ON FUNCTION keel_job_outbox_tenants(double precision, integer) TO keel_app',
      )
      await owner.end()
    }
  })
})
