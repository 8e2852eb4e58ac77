import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Keel, TenantClient } from '../src/index.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

const open: Keel[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})

/** A keel on `queue` that defines `names`, each handler answering which process ran it. */
function keelWith(queue: string, who: string, names: readonly string[]): Keel {
  const keel = testKeel({ jobs: { redis: { url: readStack().redis.url }, queue, closeTimeoutMs: 2_000 } })
  for (const name of names) {
    keel.defineJob(name, { schema: z.object({ n: z.number() }), retries: 2, handler: async () => who })
  }
  open.push(keel)
  return keel
}

async function settled(db: TenantClient, jobId: string) {
  await waitFor(`job ${jobId} to finish`, async () => {
    const state = (await db.jobStatus(jobId))?.state
    return state === 'completed' || state === 'failed'
  })
  return (await db.jobStatus(jobId))!
}

describe('routing: a worker only receives the jobs it runs (ADR 0025)', () => {
  it('two workers with disjoint job lists on one queue: every job runs on the worker that knows it, none fails', async () => {
    const queue = `route${randomBytes(4).toString('hex')}`
    const producer = keelWith(queue, 'producer', ['route.a', 'route.b'])
    // Two deployments: each defines (and runs) only its own job, as in a rolling deploy.
    keelWith(queue, 'worker-a', ['route.a']).startWorker({ concurrency: 4 })
    keelWith(queue, 'worker-b', ['route.b']).startWorker({ concurrency: 4 })
    const db = producer.tenant('acme')
    const jobs = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const name = i % 2 === 0 ? 'route.a' : 'route.b'
        return { name, ...(await db.enqueue(name, { n: i })) }
      }),
    )
    for (const job of jobs) {
      expect(await settled(db, job.jobId)).toMatchObject({
        state: 'completed',
        attempts: 1,
        error: null,
        result: job.name === 'route.a' ? 'worker-a' : 'worker-b',
      })
    }
    expect(await db.deadLetters()).toEqual([])
  }, 60_000)

  it('a job no worker knows yet waits, then runs once a worker that knows it starts', async () => {
    const queue = `route${randomBytes(4).toString('hex')}`
    const producer = keelWith(queue, 'producer', ['route.a', 'route.new'])
    keelWith(queue, 'worker-a', ['route.a']).startWorker()
    const db = producer.tenant('acme')
    const fresh = await db.enqueue('route.new', { n: 1 })
    // The running worker was free to take it: a job enqueued after it runs, and the new one still waits.
    const later = await db.enqueue('route.a', { n: 2 })
    expect(await settled(db, later.jobId)).toMatchObject({ state: 'completed', result: 'worker-a' })
    expect(await db.jobStatus(fresh.jobId)).toMatchObject({ state: 'waiting', attempts: 0, error: null })
    // The new deployment's worker starts.
    keelWith(queue, 'worker-new', ['route.new']).startWorker()
    expect(await settled(db, fresh.jobId)).toMatchObject({
      state: 'completed',
      attempts: 1,
      result: 'worker-new',
    })
  }, 60_000)
})
