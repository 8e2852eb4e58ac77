/** The outcome of one item of a fleet run. */
export type FleetOutcome<R> = { id: string; ok: true; value: R } | { id: string; ok: false; error: Error }

/**
 * Runs `work` over `ids`, `concurrency` at a time, never stopping on a failure (each failure is its own
 * outcome). With `canary` > 0 the first `canary` ids run first, and any failure among them stops the run:
 * the rest are returned as `skipped`. `pauseMs` is each worker's sleep between two tenants.
 */
export async function runFleet<R>(
  ids: readonly string[],
  concurrency: number,
  canary: number,
  work: (id: string) => Promise<R>,
  pauseMs = 0,
): Promise<{ outcomes: FleetOutcome<R>[]; skipped: string[] }> {
  const outcomes: FleetOutcome<R>[] = []
  const pool = async (batch: readonly string[]) => {
    let next = 0
    const worker = async () => {
      while (next < batch.length) {
        const id = batch[next++]!
        try {
          outcomes.push({ id, ok: true, value: await work(id) })
        } catch (error) {
          outcomes.push({ id, ok: false, error: error instanceof Error ? error : new Error(String(error)) })
        }
        // pauseBetweenTenantsMs: leave the server's CPU to the app between tenants (not after the last).
        if (pauseMs > 0 && next < batch.length) await new Promise((r) => setTimeout(r, pauseMs))
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, batch.length) }, worker))
  }
  const canaries = ids.slice(0, canary)
  if (canaries.length > 0) {
    await pool(canaries)
    if (outcomes.some((o) => !o.ok)) return { outcomes, skipped: ids.slice(canary) }
  }
  await pool(ids.slice(canaries.length))
  return { outcomes, skipped: [] }
}
