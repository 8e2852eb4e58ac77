import { randomBytes } from 'node:crypto'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Keel } from '../src/index.js'
import { testKeel } from './support/keel.js'
import { ensureTestRedis, testRedis } from './support/redis-topology.js'
import { waitFor } from './support/wait.js'

const open: Keel[] = []
function jobsKeel(tenantConcurrency = 0): Keel {
  const keel = testKeel({
    jobs: {
      redis: testRedis(),
      queue: `fair${randomBytes(4).toString('hex')}`,
      tenantConcurrency,
      closeTimeoutMs: 2_000,
    },
  })
  open.push(keel)
  return keel
}
beforeAll(ensureTestRedis)
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})

describe('fairness across tenants', () => {
  it("one tenant's flood of 5,000 jobs does not make another tenant's single job wait behind it", async () => {
    const keel = jobsKeel()
    const concurrency = 10
    let started = 0
    let bStartedAfter = -1
    let bStartedAt = 0
    keel.defineJob('work', {
      schema: z.object({ who: z.string() }),
      handler: async ({ who }) => {
        started++
        if (who === 'B') {
          bStartedAfter = started - 1
          bStartedAt = performance.now()
        }
        await new Promise((r) => setTimeout(r, 2))
      },
    })
    const a = keel.tenant('tenant-a')
    for (let i = 0; i < 5_000; i += 250) {
      await Promise.all(Array.from({ length: 250 }, () => a.enqueue('work', { who: 'A' })))
    }
    keel.startWorker({ concurrency })
    await waitFor('the worker to be busy with A', () => started >= concurrency)
    const startedBeforeB = started
    const enqueuedAt = performance.now()
    await keel.tenant('tenant-b').enqueue('work', { who: 'B' })
    await waitFor("B's job to start", () => bStartedAfter >= 0, 60_000)
    const aJobsAhead = bStartedAfter - startedBeforeB
    console.log(
      `fairness: B's job started ${(bStartedAt - enqueuedAt).toFixed(0)} ms after its enqueue, behind ${aJobsAhead} of A's jobs (A's backlog: ${5_000 - startedBeforeB}; worker concurrency ${concurrency})`,
    )
    // Within a few batches of `concurrency`, not after A's backlog of thousands.
    expect(aJobsAhead).toBeLessThanOrEqual(3 * concurrency)
  }, 120_000)

  it("caps a tenant's running jobs across workers (tenantConcurrency)", async () => {
    const keel = jobsKeel(2)
    let running = 0
    let peak = 0
    let done = 0
    keel.defineJob('capped', {
      schema: z.object({}),
      handler: async () => {
        running++
        peak = Math.max(peak, running)
        await new Promise((r) => setTimeout(r, 100))
        running--
        done++
      },
    })
    keel.startWorker({ concurrency: 5 })
    keel.startWorker({ concurrency: 5 })
    const db = keel.tenant('capped-tenant')
    await Promise.all(Array.from({ length: 12 }, () => db.enqueue('capped', {})))
    await waitFor('all jobs to finish', () => done === 12, 60_000)
    expect(peak).toBe(2)
  }, 120_000)
})
