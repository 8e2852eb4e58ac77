import { pipeline } from 'node:stream/promises'
import type { ExportProgressEvent, Keel } from '@keel/core'
import { appKeel, BIG, countingSink, settings, TABLE } from './export-fixture.js'
import { closedLoop, type LoopResult } from './load.js'
import { median } from './stats.js'

export interface Neighbours {
  /** maxRowsPerSecond of the export, undefined: unpaced. */
  pace: number | undefined
  alone: LoopResult[]
  duringExport: LoopResult[]
  p99AloneMs: number
  p99DuringMs: number
  ratio: number
  exportsCompleted: number
  exportRowsPerS: number
}

interface Tally {
  during: LoopResult[]
  completed: number
  rows: number
  ms: number
}

/**
 * The other tenants' point selects alone, then beside megacorp's export at each pace (undefined:
 * unpaced), in every round: the phases of one round run back to back in a rotating order, so the
 * shared machine's drifts (its other work, CPU steal) weigh on every pace alike rather than on the one
 * measured during them. Each pace's ratio is its median p99 over the median p99 alone.
 */
export async function othersP99(paces: ReadonlyArray<number | undefined>): Promise<Neighbours[]> {
  const keel = appKeel(10)
  const small = Array.from({ length: settings.smallTenants }, (_, i) => keel.tenant(`small${i}`))
  const op = () =>
    small[Math.floor(Math.random() * small.length)]!.query(`SELECT * FROM ${TABLE} WHERE id = $1`, [
      1 + Math.floor(Math.random() * settings.smallRows),
    ])
  const alone: LoopResult[] = []
  const tallies = paces.map((): Tally => ({ during: [], completed: 0, rows: 0, ms: 0 }))
  const loop = () => closedLoop(op, { concurrency: settings.concurrency, seconds: settings.seconds })
  try {
    await closedLoop(op, { concurrency: settings.concurrency, seconds: 1 }) // warm-up
    for (let round = 0; round < settings.neighbourRounds; round++) {
      const order = [-1, ...paces.keys()]
      const rotated = [...order.slice(round % order.length), ...order.slice(0, round % order.length)]
      for (const phase of rotated) {
        if (phase === -1) alone.push(await loop())
        else await beside(keel, paces[phase], tallies[phase]!, loop)
      }
    }
  } finally {
    await keel.close()
  }
  const p99Alone = median(alone.map((r) => r.latency.p99Ms))
  return paces.map((pace, i) => {
    const t = tallies[i]!
    const p99During = median(t.during.map((r) => r.latency.p99Ms))
    return {
      pace,
      alone,
      duringExport: t.during,
      p99AloneMs: p99Alone,
      p99DuringMs: p99During,
      ratio: p99During / p99Alone,
      exportsCompleted: t.completed,
      exportRowsPerS: t.rows / (t.ms / 1_000),
    }
  })
}

/** One measuring loop while megacorp's ndjson export runs back to back at `pace`. */
async function beside(
  keel: Keel,
  pace: number | undefined,
  tally: Tally,
  loop: () => Promise<LoopResult>,
): Promise<void> {
  let stop = false
  const big = keel.tenant(BIG)
  const exporter = (async () => {
    while (!stop) {
      const out = big.export({
        tables: [TABLE],
        format: 'ndjson',
        ...(pace === undefined ? {} : { maxRowsPerSecond: pace }),
      })
      let rows = 0
      out.on('progress', (e: ExportProgressEvent) => {
        rows = e.rows
      })
      const t0 = performance.now()
      // A paced export is cut when the loop ends (300,000 rows at 25,000 rows/s outlast it).
      const timer = setInterval(() => {
        if (stop) out.destroy()
      }, 50)
      await pipeline(out, countingSink()).then(
        () => tally.completed++,
        () => undefined,
      )
      clearInterval(timer)
      tally.ms += performance.now() - t0
      tally.rows += rows
    }
  })()
  // The export running before the clock starts, as in a steady state.
  await new Promise((resolve) => setTimeout(resolve, 200))
  tally.during.push(await loop())
  stop = true
  await exporter
}
