/**
 * The example's job worker: `node examples/dist/worker.js --concurrency 8`. Runs the jobs the web app
 * enqueues (CSV imports, monthly reports, invoice notifications), each as its tenant.
 */
import { createAppKeel } from './app/app-keel.js'
import { announce, processArgs } from './app/process-args.js'
import { demoUrls } from './stack-urls.js'
import { startTracing } from './telemetry/tracing.js'

const args = processArgs()
const tracing = startTracing('keel-example-worker')
const keel = createAppKeel(demoUrls(), { replicas: args.replicas, poolMax: args.poolMax })
const worker = keel.startWorker({ concurrency: args.concurrency })

worker.waitUntilReady().then(
  () => announce({ worker: 'ready', concurrency: args.concurrency }),
  (error: unknown) => {
    process.stderr.write(`worker failed: ${String(error)}\n`)
    process.exit(1)
  },
)

const shutdown = async () => {
  // Stops taking jobs and waits (bounded by jobs.closeTimeoutMs) for the running ones.
  await keel.close()
  await tracing?.shutdown()
  process.exit(0)
}
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
