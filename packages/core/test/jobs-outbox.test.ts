import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { applyJobOutbox, type Keel } from '../src/index.js'
import { redisClient } from './support/cache.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers } from './support/worker.js'

const here = dirname(fileURLToPath(import.meta.url))
const table = 'outbox_items'
const redis = redisClient()
const open: Keel[] = []

function outboxKeel(queue: string): Keel {
  const keel = testKeel({
    jobs: {
      redis: { url: readStack().redis.url },
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
    return Number((await su.query('SELECT count(*) AS n FROM keel_job_outbox')).rows[0]?.n)
  } finally {
    await su.end()
  }
}

beforeAll(async () => {
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
