import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { type LatencySummary, summarize } from './stats.js'

export interface AppLoadOptions {
  url: string
  clients: number
  /** One statement with one integer parameter ($1 in [1, maxParam]); `{table}` is replaced by a random entry of `tables`. */
  sql: string
  maxParam: number
  tables?: string[]
}

/**
 * The app's load in a process of its own (dist/migrate-app-worker.js): its latency is not the migrator's
 * event loop. Resolves once the clients run; stop() returns their latency summary and query count.
 */
export async function startAppProcess(
  options: AppLoadOptions,
): Promise<{ stop: () => Promise<{ app: LatencySummary; queries: number }> }> {
  // Bundled into a chunk next to the entry points in dist/: the worker is a sibling file.
  const child = fork(fileURLToPath(new URL('./migrate-app-worker.js', import.meta.url)), [], {
    stdio: 'inherit',
  })
  const next = (type: string) =>
    new Promise<{ samples?: number[] }>((resolve, reject) => {
      const onMessage = (m: { type: string; samples?: number[] }) => {
        if (m.type !== type) return
        child.off('message', onMessage)
        resolve(m)
      }
      child.on('message', onMessage)
      child.once('exit', (code) => {
        if (code !== 0) reject(new Error(`app process exited with ${code}`))
      })
    })
  const started = next('started')
  child.send({ type: 'start', ...options })
  await started
  return {
    stop: async () => {
      const stopped = next('stopped')
      child.send({ type: 'stop' })
      const { samples = [] } = await stopped
      return { app: summarize(samples), queries: samples.length }
    },
  }
}
