import { randomBytes } from 'node:crypto'
import { context, SpanKind } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { Queue } from 'bullmq'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { JobStatus, Keel, TenantClient } from '../src/index.js'
import { queueOf } from '../src/jobs/job-queues.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { ensureTestRedis, testRedis, testRedisClient, testRedisName } from './support/redis-topology.js'
import { waitFor } from './support/wait.js'

const table = 'job_items'
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const open: Keel[] = []

function jobsKeel(extra: Parameters<typeof testKeel>[0] = {}): Keel {
  const keel = testKeel({
    jobs: {
      redis: testRedis(),
      queue: `q${randomBytes(4).toString('hex')}`,
      closeTimeoutMs: 2_000,
    },
    telemetry: { tracerProvider: provider },
    ...extra,
  })
  open.push(keel)
  return keel
}

beforeAll(async () => {
  await ensureTestRedis()
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  await createRlsTable(table)
  await awaitOnReplicas(table)
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})
afterAll(async () => {
  await dropTable(table)
  context.disable()
})

class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** Sums each metric's points: histogram counts, counter and gauge values. */
async function metricValues(reader: TestReader): Promise<Record<string, number>> {
  const { resourceMetrics } = await reader.collect()
  const out: Record<string, number> = {}
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      let total = 0
      for (const point of metric.dataPoints as Array<{ value: number | { count: number } }>) {
        total += typeof point.value === 'number' ? point.value : point.value.count
      }
      out[metric.descriptor.name] = total
    }
  }
  return out
}

async function finished(db: TenantClient, jobId: string) {
  let status = await db.jobStatus(jobId)
  await waitFor(`job ${jobId} to finish`, async () => {
    status = await db.jobStatus(jobId)
    return status?.state === 'completed' || status?.state === 'failed'
  })
  return status!
}

describe('jobs', () => {
  it('runs a job as its tenant, with a validated payload, and reports its status', async () => {
    const keel = jobsKeel()
    keel.defineJob('reports.generate', {
      schema: z.object({ month: z.string().regex(/^\d{4}-\d{2}$/) }),
      handler: async ({ month }, { db, job }) => {
        const scoped = await db.query<{ t: string }>("SELECT current_setting('app.tenant_id', true) AS t")
        expect(keel.current()).toBe(db)
        return { month, tenant: scoped.rows[0]?.t, jobId: job.id }
      },
    })
    keel.startWorker({ concurrency: 2 })
    const db = keel.tenant('acme')
    const { jobId } = await db.enqueue('reports.generate', { month: '2026-11' })
    const status = await finished(db, jobId)
    expect(status).toMatchObject({ state: 'completed', attempts: 1, name: 'reports.generate' })
    expect(status.result).toEqual({ month: '2026-11', tenant: 'acme', jobId })
  })

  it('refuses an unknown job or a bad payload, and enqueues nothing', async () => {
    const keel = jobsKeel()
    keel.defineJob('emails.send', {
      schema: z.object({ to: z.string().email() }),
      handler: async () => 'sent',
    })
    const db = keel.tenant('acme')
    await expect(db.enqueue('emails.sned', { to: 'a@b.co' })).rejects.toMatchObject({
      code: 'KEEL_JOB_UNKNOWN',
    })
    await expect(db.enqueue('emails.send', { to: 'not an address' })).rejects.toMatchObject({
      code: 'KEEL_JOB_PAYLOAD_INVALID',
      details: { job: 'emails.send', issues: [{ path: 'to' }] },
    })
    await expect(db.enqueue('emails.send', { to: 'a@b.co' }, { priority: 99 })).rejects.toMatchObject({
      code: 'KEEL_JOB_INVALID',
    })
    const connection = testRedisClient()
    const queue = new Queue(queueOf(keel.config.jobs!.queue, 'emails.send', testRedisName() === 'cluster'), {
      connection,
    })
    const counts = await queue.getJobCounts()
    await queue.close()
    connection.disconnect()
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0)
    expect(await db.jobStatus('j-anything')).toBeNull()
  })

  it('the same idempotency key gives one job, also concurrently and after it completed', async () => {
    const keel = jobsKeel()
    let runs = 0
    keel.defineJob('imports.csv', {
      schema: z.object({ file: z.string() }),
      handler: async () => {
        runs++
        await new Promise((r) => setTimeout(r, 100))
        return 'imported'
      },
    })
    keel.startWorker()
    const db = keel.tenant('acme')
    const ids = await Promise.all(
      Array.from({ length: 10 }, () =>
        db.enqueue('imports.csv', { file: 'big.csv' }, { idempotencyKey: 'upload-42' }),
      ),
    )
    expect(new Set(ids.map((i) => i.jobId)).size).toBe(1)
    await finished(db, ids[0]!.jobId)
    const again = await db.enqueue('imports.csv', { file: 'big.csv' }, { idempotencyKey: 'upload-42' })
    expect(again.jobId).toBe(ids[0]!.jobId)
    await new Promise((r) => setTimeout(r, 300))
    expect(runs).toBe(1)
    // Another tenant's same key is another job.
    const other = await keel
      .tenant('globex')
      .enqueue('imports.csv', { file: 'big.csv' }, { idempotencyKey: 'upload-42' })
    expect(other.jobId).not.toBe(ids[0]!.jobId)
  })

  it("never shows one tenant another tenant's job", async () => {
    const keel = jobsKeel()
    keel.defineJob('noop', { schema: z.object({}), handler: async () => 'secret result' })
    keel.startWorker()
    const { jobId } = await keel.tenant('acme').enqueue('noop', {})
    await finished(keel.tenant('acme'), jobId)
    expect(await keel.tenant('globex').jobStatus(jobId)).toBeNull()
  })

  it('retries with backoff, and fails an attempt that exceeds its timeout', async () => {
    const keel = jobsKeel()
    let attempts = 0
    keel.defineJob('flaky', {
      schema: z.object({}),
      retries: 3,
      backoff: { delayMs: 20 },
      handler: async () => {
        attempts++
        if (attempts < 3) throw new Error(`boom ${attempts}`)
        return 'third time lucky'
      },
    })
    keel.defineJob('slow', {
      schema: z.object({}),
      retries: 1,
      backoff: { delayMs: 10 },
      timeoutMs: 50,
      handler: async (_p, { signal }) => {
        await new Promise((r) => setTimeout(r, 1_000))
        return signal.aborted ? 'aborted' : 'done'
      },
    })
    keel.startWorker()
    const db = keel.tenant('acme')
    const flaky = await finished(db, (await db.enqueue('flaky', {})).jobId)
    expect(flaky).toMatchObject({ state: 'completed', attempts: 3, result: 'third time lucky' })
    const slow = await finished(db, (await db.enqueue('slow', {})).jobId)
    expect(slow.state).toBe('failed')
    expect(slow.attempts).toBe(2)
    expect(slow.error).toContain('exceeded 50 ms')
  })

  it('jobStatus never pairs a finished state with the fields of an earlier attempt', async () => {
    const keel = jobsKeel()
    let attempts = 0
    keel.defineJob('settling', {
      schema: z.object({}),
      retries: 2,
      backoff: { delayMs: 1 },
      handler: async () => {
        attempts++
        if (attempts < 3) throw new Error(`not yet ${attempts}`)
        return 'settled'
      },
    })
    keel.startWorker()
    const db = keel.tenant('acme')
    const { jobId } = await db.enqueue('settling', {})
    // Read back to back while the attempts run, until one read says "completed": that read, and every
    // other that says the job finished, carries the final attempt's fields.
    const seen: Array<JobStatus | null> = []
    for (let done = false; !done; ) {
      const status = await db.jobStatus(jobId)
      seen.push(status)
      done = status?.state === 'completed'
    }
    expect(seen.filter((s) => s?.state === 'failed')).toEqual([])
    expect(seen.at(-1)).toMatchObject({ result: 'settled', attempts: 3 })
  })

  it('a job reads the row its request just wrote, through the lagged replica (read-your-writes crosses the queue)', async () => {
    const keel = jobsKeel({ replicas: ['replica2'], maxReplicaLagMs: 60_000 })
    await waitFor('replica2 in rotation', async () => (await keel.health()).replicas[0]?.inRotation === true)
    keel.defineJob('invoices.email', {
      schema: z.object({ body: z.string() }),
      handler: async ({ body }, { db }) => {
        const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE body = $1`, [
          body,
        ])
        return r.rows[0]?.n
      },
    })
    keel.startWorker()
    const db = keel.tenant('acme')
    const body = `acme:${randomBytes(4).toString('hex')}`
    await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', $1)`, [body])
    const { jobId } = await db.enqueue('invoices.email', { body })
    const status = await finished(db, jobId)
    expect(status.error).toBeNull()
    expect(status.result).toBe(1)
  })

  it('continues the producer trace: a PRODUCER span at enqueue, a CONSUMER span per attempt', async () => {
    const keel = jobsKeel()
    keel.defineJob('traced', { schema: z.object({}), handler: async () => 'ok' })
    keel.startWorker()
    exporter.reset()
    const db = keel.tenant('acme')
    const tracer = provider.getTracer('test')
    const jobId = await tracer.startActiveSpan('POST /reports', async (span) => {
      const r = await db.enqueue('traced', {})
      span.end()
      return r.jobId
    })
    await finished(db, jobId)
    const spans = exporter.getFinishedSpans()
    const request = spans.find((s) => s.name === 'POST /reports')!
    const producer = spans.find((s) => s.kind === SpanKind.PRODUCER)!
    const consumer = spans.find((s) => s.kind === SpanKind.CONSUMER)!
    expect(producer.parentSpanContext?.spanId).toBe(request.spanContext().spanId)
    expect(consumer.spanContext().traceId).toBe(request.spanContext().traceId)
    expect(consumer.parentSpanContext?.spanId).toBe(producer.spanContext().spanId)
    expect(consumer.attributes).toMatchObject({
      'messaging.system': 'bullmq',
      'messaging.operation.type': 'process',
      'messaging.message.id': jobId,
      'keel.tenant.id': 'acme',
    })
    expect(producer.attributes['messaging.operation.type']).toBe('send')
  })

  it('lists dead letters per tenant and re-drives one after the cause is fixed', async () => {
    const keel = jobsKeel()
    let broken = true
    keel.defineJob('webhooks.deliver', {
      schema: z.object({ url: z.string() }),
      retries: 1,
      backoff: { delayMs: 10 },
      handler: async ({ url }) => {
        if (broken) throw new Error(`${url} answered 503`)
        return 'delivered'
      },
    })
    keel.startWorker()
    const acme = keel.tenant('acme')
    const { jobId } = await acme.enqueue('webhooks.deliver', { url: 'https://example.invalid/hook' })
    expect(await finished(acme, jobId)).toMatchObject({ state: 'failed', attempts: 2 })
    await waitFor('the dead letter to be listed', async () => (await acme.deadLetters()).length === 1)
    const [dead] = await acme.deadLetters()
    expect(dead).toMatchObject({ id: jobId, name: 'webhooks.deliver', state: 'failed' })
    expect(dead?.error).toContain('answered 503')
    expect(await keel.tenant('globex').deadLetters()).toEqual([])
    expect(await keel.tenant('globex').redrive(jobId)).toBe(false)
    broken = false
    expect(await acme.redrive(jobId)).toBe(true)
    await waitFor(
      'the re-driven job to complete',
      async () => (await acme.jobStatus(jobId))?.state === 'completed',
    )
    expect(await acme.jobStatus(jobId)).toMatchObject({ result: 'delivered', attempts: 1 })
    expect(await acme.deadLetters()).toEqual([])
    expect(await acme.redrive(jobId)).toBe(false)
  })

  it('measures queue depth, wait and run time, and failures', async () => {
    const reader = new TestReader()
    const keel = jobsKeel({ telemetry: { meterProvider: new MeterProvider({ readers: [reader] }) } })
    keel.defineJob('metered', {
      schema: z.object({ fail: z.boolean() }),
      retries: 0,
      handler: async ({ fail }) => {
        if (fail) throw new Error('no')
        return 'yes'
      },
    })
    const db = keel.tenant('acme')
    const ok = await db.enqueue('metered', { fail: false })
    const bad = await db.enqueue('metered', { fail: true })
    const before = await metricValues(reader)
    expect(before['keel.jobs.queue.depth']).toBeGreaterThanOrEqual(2)
    keel.startWorker()
    await finished(db, ok.jobId)
    await finished(db, bad.jobId)
    const after = await metricValues(reader)
    expect(after['keel.jobs.wait.duration']).toBe(2)
    expect(after['keel.jobs.run.duration']).toBe(2)
    expect(after['keel.jobs.failures']).toBe(1)
  })

  it('close() stops taking jobs and waits for the running ones, bounded', async () => {
    const keel = jobsKeel()
    let finishedRuns = 0
    keel.defineJob('long', {
      schema: z.object({}),
      handler: async () => {
        await new Promise((r) => setTimeout(r, 300))
        finishedRuns++
        return 'done'
      },
    })
    keel.startWorker({ concurrency: 1 })
    const db = keel.tenant('acme')
    const first = await db.enqueue('long', {})
    const second = await db.enqueue('long', {})
    await waitFor('the first job to start', async () => (await db.jobStatus(first.jobId))?.state === 'active')
    await keel.close()
    // The running job finished; the waiting one was not taken.
    expect(finishedRuns).toBe(1)
    const sameQueue = testKeel({
      jobs: { redis: testRedis(), queue: keel.config.jobs!.queue },
    })
    open.push(sameQueue)
    const statusOf = (id: string) => sameQueue.tenant('acme').jobStatus(id)
    expect((await statusOf(first.jobId))?.state).toBe('completed')
    expect((await statusOf(second.jobId))?.state).toBe('waiting')
  })

  it('a job running when close() begins still reaches the database, and its writes land', async () => {
    const keel = jobsKeel()
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    let started = false
    keel.defineJob('late-write', {
      schema: z.object({ body: z.string() }),
      handler: async ({ body }, { db }) => {
        started = true
        await gate
        // close() has begun by now: this session is accepted work, not a new call.
        await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, [db.tenantId, body])
        return (
          await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE body = $1`, [body])
        ).rows[0]?.n
      },
    })
    keel.startWorker({ concurrency: 1 })
    const db = keel.tenant('acme')
    const body = `late-${randomBytes(4).toString('hex')}`
    const { jobId } = await db.enqueue('late-write', { body })
    await waitFor('the job to start', async () => started)
    const closing = keel.close()
    // New calls are refused at once while the job still runs.
    await expect(db.query('SELECT 1')).rejects.toMatchObject({ code: 'KEEL_CLOSED' })
    release()
    await closing
    const check = testKeel({
      jobs: { redis: testRedis(), queue: keel.config.jobs!.queue },
    })
    open.push(check)
    const status = await check.tenant('acme').jobStatus(jobId)
    expect(status).toMatchObject({ state: 'completed', result: 1 })
    const rows = await check.tenant('acme').query(`SELECT 1 FROM ${table} WHERE body = $1`, [body], {
      route: 'primary',
    })
    expect(rows.rowCount).toBe(1)
  })

  it('bad definitions and calls without a jobs configuration are KeelErrors', () => {
    const keel = jobsKeel()
    expect(() => keel.defineJob('bad name!', { schema: z.object({}), handler: async () => 1 })).toThrow(
      expect.objectContaining({ code: 'KEEL_JOB_INVALID' }),
    )
    expect(() => keel.defineJob('x', { schema: {} as never, handler: async () => 1 })).toThrow(
      expect.objectContaining({ code: 'KEEL_JOB_INVALID' }),
    )
    keel.defineJob('x', { schema: z.object({}), handler: async () => 1 })
    expect(() => keel.defineJob('x', { schema: z.object({}), handler: async () => 1 })).toThrow(
      expect.objectContaining({ code: 'KEEL_JOB_INVALID' }),
    )
    const plain = testKeel()
    open.push(plain)
    expect(() => plain.startWorker()).toThrow(expect.objectContaining({ code: 'KEEL_JOBS_NOT_CONFIGURED' }))
  })
})
