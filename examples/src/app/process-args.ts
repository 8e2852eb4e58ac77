import { parseArgs } from 'node:util'

/** `--name value` flags of the example's processes (server.js, worker.js, seed.js). */
export function processArgs() {
  const { values } = parseArgs({
    options: {
      framework: { type: 'string', default: 'express' },
      port: { type: 'string', default: '3000' },
      replicas: { type: 'string', default: 'all' },
      concurrency: { type: 'string', default: '8' },
      'pool-max': { type: 'string', default: '20' },
      'primary-url': { type: 'string' },
      'replica-urls': { type: 'string' },
    },
    strict: true,
  })
  const replicas = values.replicas
  if (replicas !== 'all' && replicas !== 'lagged' && replicas !== 'none') {
    throw new Error(`--replicas must be all, lagged or none (got ${replicas})`)
  }
  return {
    framework: values.framework,
    port: Number(values.port),
    replicas: replicas as 'all' | 'lagged' | 'none',
    concurrency: Number(values.concurrency),
    poolMax: Number(values['pool-max']),
  }
}

/** Tells the parent (the demo, the load bench) the port when forked, else prints it. */
export function announce(message: Record<string, unknown>): void {
  if (process.send) process.send(message)
  else process.stdout.write(`${JSON.stringify(message)}\n`)
}
