import os from 'node:os'
import { writeResults } from './results.js'
import { round } from './stats.js'

/** Runs a benchmark's main and exits with its code (0 when it returns none); a throw prints and exits 1. */
export function runMain(main: () => Promise<unknown>): void {
  main().then(
    (code) => process.exit(typeof code === 'number' ? code : 0),
    (error: unknown) => {
      console.error(error)
      process.exit(1)
    },
  )
}

interface FinishedRun {
  totalS?: number
  meta: { loadAverageEnd?: number[] }
}

/**
 * The end of a run that checks targets: stamps its duration and the closing load average, prints the
 * findings, writes `bench/results/<name>.{json,md}`; returns the exit code (1 when a row was broken).
 */
export function finishRun<R extends FinishedRun>(
  name: string,
  title: string,
  results: R,
  started: number,
  findings: (results: R) => string[],
  render: (results: R) => string,
  broken: boolean,
): number {
  results.totalS = (performance.now() - started) / 1_000
  results.meta.loadAverageEnd = os.loadavg().map((x) => round(x, 2))
  const summary = findings(results)
  if (summary.length > 0) console.log(`\n${summary.map((s) => `- ${s.replaceAll('**', '')}`).join('\n')}`)
  const written = writeResults(name, title, results, render(results))
  console.log(`\nwrote ${written.join(', ')}; total ${results.totalS.toFixed(0)} s`)
  if (broken) console.error('some rows could not be measured (see above): the bench is broken')
  return broken ? 1 : 0
}
