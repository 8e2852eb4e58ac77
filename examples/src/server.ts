/**
 * The example web app: `node examples/dist/server.js --framework express|fastify|raw --port 3000`.
 * Uses the configured URLs (KEEL_PG_PRIMARY_URL, ...) or the local stack's.
 */
import type { AddressInfo } from 'node:net'
import { closeKeelWithServer } from '@keel/express'
import { createAppKeel } from './app/app-keel.js'
import { buildExpressApp } from './app/express-app.js'
import { buildFastifyApp } from './app/fastify-app.js'
import { announce, processArgs } from './app/process-args.js'
import { buildRawApp } from './app/raw-app.js'
import { demoUrls } from './stack-urls.js'
import { startTracing } from './telemetry/tracing.js'

const args = processArgs()
const tracing = startTracing(`keel-example-${args.framework}`)
const urls = demoUrls()

async function main(): Promise<void> {
  let stop: () => Promise<void>
  let port: number
  if (args.framework === 'fastify') {
    const keel = createAppKeel(urls, { replicas: args.replicas, poolMax: args.poolMax })
    const app = await buildFastifyApp(keel)
    await app.listen({ port: args.port, host: '127.0.0.1' })
    port = (app.server.address() as AddressInfo).port
    // The plugin closes keel in onClose: in-flight requests finish, then workers and pools.
    stop = () => app.close()
  } else if (args.framework === 'express') {
    const keel = createAppKeel(urls, { replicas: args.replicas, poolMax: args.poolMax })
    const server = buildExpressApp(keel).listen(args.port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject))
    port = (server.address() as AddressInfo).port
    // Express has no shutdown hook: keel closes once the server has drained its last connection.
    const keelClosed = closeKeelWithServer(server, keel)
    stop = async () => {
      server.close()
      await keelClosed
    }
  } else if (args.framework === 'raw') {
    const { app, close } = buildRawApp(urls.superUrl ?? urls.appUrl, args.poolMax)
    const server = app.listen(args.port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject))
    port = (server.address() as AddressInfo).port
    stop = async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await close()
    }
  } else {
    throw new Error(`--framework must be express, fastify or raw (got ${args.framework})`)
  }
  announce({ listening: port, framework: args.framework })
  const shutdown = async () => {
    await stop()
    await tracing?.shutdown()
    process.exit(0)
  }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}

main().catch((error: unknown) => {
  process.stderr.write(
    `server failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  )
  process.exit(1)
})
