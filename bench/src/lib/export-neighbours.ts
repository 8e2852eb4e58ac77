import { pipeline } from 'node:stream/promises'
import type { ExportProgressEvent } from '@keel/core'
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

export async function othersP99(pace: number | undefined): Promise<Neighbours> {
  const keel = appKeel(10)
  const small = Array.from({ length: settings.smallTenants }, (_, i) => keel.tenant(`small${i}`))
  const op = () =>
    small[Math.floor(Math.random() * small.length)]!.query(`SELECT * FROM ${TABLE} WHERE id = $1`, [
      1 + Math.floor(Math.random() * settings.smallRows),
    ])
  const alone: LoopResult[] = []
  const during: LoopResult[] = []
  let exportsCompleted = 0
  let exportedRows = 0
  let exportingMs = 0
  try {
    await closedLoop(op, { concurrency: settings.concurrency, seconds: 1 }) // warm-up
    for (let round = 0; round < settings.rounds; round++) {
      alone.push(await closedLoop(op, { concurrency: settings.concurrency, seconds: settings.seconds }))
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
          // A paced export is cut when the round ends (300,000 rows at 50,000 rows/s outlast it).
          const cut = () => out.destroy()
          const timer = setInterval(() => {
            if (stop) cut()
          }, 50)
          await pipeline(out, countingSink()).then(
            () => exportsCompleted++,
            () => undefined,
          )
          clearInterval(timer)
          exportingMs += performance.now() - t0
          exportedRows += rows
        }
      })()
      during.push(await closedLoop(op, { concurrency: settings.concurrency, seconds: settings.seconds }))
      stop = true
      await exporter
    }
  } finally {
    await keel.close()
  }
  const p99Alone = median(alone.map((r) => r.latency.p99Ms))
  const p99During = median(during.map((r) => r.latency.p99Ms))
  return {
    pace,
    alone,
    duringExport: during,
    p99AloneMs: p99Alone,
    p99DuringMs: p99During,
    ratio: p99During / p99Alone,
    exportsCompleted,
    exportRowsPerS: exportedRows / (exportingMs / 1_000),
  }
}
