import { KeelError, type TenantClient } from '../../src/index.js'

/** What an enqueue load saw: every call is exactly one of acknowledged, rejected (KeelError) or other. */
export interface EnqueueOutcomes {
  readonly acknowledged: string[]
  /** When each acknowledgement arrived (ms, performance.now()). */
  readonly acknowledgedAt: number[]
  readonly rejected: Map<string, number>
  readonly other: unknown[]
  /** The slowest call (ms): a hang shows here, and in the load never ending. */
  slowestMs: number
  calls: number
}

/**
 * `concurrency` loops enqueueing `job` for `tenant` until `stop()`; resolves once every call in flight
 * has settled. For the failover tests: nothing is retried, every outcome is recorded.
 */
export function enqueueLoad(
  db: TenantClient,
  job: string,
  concurrency = 8,
): { outcomes: EnqueueOutcomes; stop: () => Promise<EnqueueOutcomes> } {
  const outcomes: EnqueueOutcomes = {
    acknowledged: [],
    acknowledgedAt: [],
    rejected: new Map(),
    other: [],
    slowestMs: 0,
    calls: 0,
  }
  let stopped = false
  let n = 0
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const started = performance.now()
      outcomes.calls++
      try {
        const { jobId } = await db.enqueue(job, { i: n++ })
        outcomes.acknowledged.push(jobId)
        outcomes.acknowledgedAt.push(performance.now())
      } catch (error) {
        if (error instanceof KeelError) {
          outcomes.rejected.set(error.code, (outcomes.rejected.get(error.code) ?? 0) + 1)
          // A rejected call is not retried at once: an app would back off too.
          await new Promise((r) => setTimeout(r, 20))
        } else outcomes.other.push(error)
      }
      outcomes.slowestMs = Math.max(outcomes.slowestMs, performance.now() - started)
    }
  })
  return {
    outcomes,
    stop: async () => {
      stopped = true
      await Promise.all(loops)
      return outcomes
    },
  }
}

/** How many acknowledged jobs Redis no longer knows (lost with an unreplicated write, or never stored). */
export async function missingJobs(db: TenantClient, ids: readonly string[]): Promise<number> {
  let missing = 0
  for (let i = 0; i < ids.length; i += 100) {
    const statuses = await Promise.all(ids.slice(i, i + 100).map((id) => db.jobStatus(id)))
    missing += statuses.filter((s) => s === null).length
  }
  return missing
}
