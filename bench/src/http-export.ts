/**
 * The HTTP load's export scenario on its own (it also runs at the end of `bash scripts/bench.sh http`):
 * the example app's other tenants' p99 without and with megacorp downloading everything. Writes
 * bench/results/http-export.{md,json}.
 *
 *   bash scripts/bench.sh http-export   (BENCH_HTTP_SECONDS, BENCH_HTTP_EXPORT_CONNECTIONS,
 *                                        BENCH_HTTP_EXPORT_ROUNDS, BENCH_HTTP_EXPORT_DOWNLOADERS)
 */
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { renderExportScenario, runExportScenario } from './lib/http-export-scenario.js'
import { loadNote, machineMeta } from './lib/machine.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { repoRoot } from './lib/stack.js'

async function main(): Promise<void> {
  const meta = machineMeta()
  process.stdout.write(`HTTP export scenario; load average ${meta.loadAverage.join(' ')}\n`)
  const seed = fork(join(repoRoot, 'examples/dist/seed.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const [code] = (await once(seed, 'exit')) as [number]
  if (code !== 0) throw new Error(`seed failed (exit ${code})`)
  const results = await runExportScenario((line) => process.stdout.write(`${line}\n`))
  const end = machineMeta().loadAverage
  const markdown = `Measured ${meta.date.slice(0, 16).replace('T', ' ')} UTC on ${meta.cores} cores (${meta.cpuModel}), Node ${meta.node}, ${loadNote(meta)}: load average ${meta.loadAverage.join(' ')} at the start, ${end.join(' ')} at the end; the app, autocannon, the downloader, three Postgres servers and Redis share it.

${renderExportScenario(results)}`
  const written = writeResults(
    'http-export',
    'HTTP load: megacorp downloads everything at peak (issue #15)',
    { meta: { ...meta, loadAverageEnd: end }, ...results },
    markdown,
  )
  process.stdout.write(`\n${markdown}\nwrote ${written.join(', ')}\n`)
}

runMain(main)
