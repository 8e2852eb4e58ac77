import { describe, expect, it } from 'vitest'
import { FleetProgress } from '../src/cli/fleet-progress.js'

/** A stream that records what the progress writes; `isTTY` decides which output it gets. */
function stream(isTTY: boolean) {
  const chunks: string[] = []
  return { out: { isTTY, write: (s: string) => chunks.push(s) } as unknown as NodeJS.WriteStream, chunks }
}

const run = (progress: FleetProgress) => {
  progress.handle({ type: 'fleet-start', tenants: 2 })
  progress.handle({ type: 'scope-done', tenant: null, applied: 1, durationMs: 12 })
  progress.handle({ type: 'scope-done', tenant: 'acme', applied: 2, durationMs: 30 })
  progress.handle({
    type: 'lock-retry',
    tenant: 'globex',
    migration: '0002_x',
    attempt: 1,
    delayMs: 700,
    blockers: [
      {
        pid: 42,
        user: 'app',
        application: 'api',
        state: 'idle in transaction',
        transactionAgeMs: 9000,
        query: 'SELECT 1',
      },
    ],
  })
  progress.handle({ type: 'scope-failed', tenant: 'globex', migration: '0002_x', error: new Error('boom') })
  progress.summary({
    applied: [],
    failed: [{ tenant: 'globex', migration: '0002_x', error: new Error('boom') }],
    skipped: [],
    rebuiltIndexes: [],
    tenants: 2,
    durationMs: 1500,
  })
}

describe('FleetProgress', () => {
  it('off a TTY: one line per tenant, the blocker, and a summary', () => {
    const { out, chunks } = stream(false)
    run(new FleetProgress(out))
    const text = chunks.join('')
    expect(text).not.toContain('\r')
    expect(text).toContain('✓ tenant acme: 2 applied (30 ms)')
    expect(text).toContain('blocked by pid 42 idle in transaction for 9000 ms: SELECT 1')
    expect(text).toContain('✗ tenant globex 0002_x: boom')
    expect(text).toContain(
      'FAILED: 0 migration(s) applied, 1/2 tenant(s) migrated, 1 failed, 0 skipped in 1.5 s',
    )
  })

  it('on a TTY: a live bar with counts, rate and ETA', () => {
    const previous = process.env.CI
    delete process.env.CI
    try {
      const { out, chunks } = stream(true)
      run(new FleetProgress(out))
      // The escape (clear line) is checked once; the bars are matched on readable text.
      const text = chunks.join('').replaceAll('\r\x1b[2K', '<CLR>')
      expect(text).toMatch(/<CLR>\[-{24}\] 0\/2 tenants · [\d.]+\/s · ETA \d+s/)
      expect(text).toMatch(/<CLR>\[#{24}\] 2\/2 tenants · [\d.]+\/s · ETA 0s · 1 failed/)
      // Redrawn at most every 80 ms, and always at the end; lines go above the bar.
      expect(text).toContain('<CLR>✗ tenant globex 0002_x: boom\n')
    } finally {
      if (previous !== undefined) process.env.CI = previous
    }
  })

  it('backfills: progress with rows, rate and ETA, and why it waits for a replica, at most every 2 s', () => {
    const { out, chunks } = stream(false)
    const progress = new FleetProgress(out)
    const base = {
      type: 'backfill-progress',
      tenant: 'acme',
      migration: '0007_fill',
      table: 'orders',
    } as const
    progress.handle({ ...base, rowsDone: 1000, totalEstimate: 4000, batches: 1, rate: 2000, etaMs: 1500 })
    progress.handle({ ...base, rowsDone: 2000, totalEstimate: 4000, batches: 2, rate: 2000, etaMs: 1000 })
    progress.handle({
      type: 'backfill-waiting',
      tenant: 'acme',
      migration: '0007_fill',
      replica: 'replica1',
      lagMs: 6200,
      maxReplicaLagMs: 2000,
    })
    progress.handle({ ...base, rowsDone: 4000, totalEstimate: 4000, batches: 4, rate: 2000, etaMs: 0 })
    const lines = chunks.join('').trim().split('\n')
    expect(lines).toEqual([
      '▸ tenant acme 0007_fill: backfill orders 1000/~4000 rows (25%) · 2000 rows/s · ETA 1.5 s',
      '… tenant acme 0007_fill: backfill waiting for replica lag: replica1 replays 6.2 s behind (maxReplicaLagMs 2000); see docs/runbooks/backfill-waiting-for-replica-lag.md',
      '▸ tenant acme 0007_fill: backfill orders 4000/~4000 rows (100%) · 2000 rows/s · ETA 0 ms',
    ])
  })
})
