import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Child {
  readonly process: ChildProcess
  readonly message: Record<string, unknown>
  stop(): Promise<void>
}

/** dist/, where tsup puts demo.js next to server.js and worker.js. */
const DIST = dirname(fileURLToPath(import.meta.url))

/**
 * Forks one of the example's processes (dist/server.js, dist/worker.js) and waits for the message it
 * announces when ready. Its stderr is passed through so a crash explains itself.
 */
export async function startChild(
  script: string,
  args: string[],
  env: Record<string, string>,
): Promise<Child> {
  const child = fork(`${DIST}/${script}`, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  const message = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within 30 s`)), 30_000)
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`${script} exited early (code ${code})`)))
    child.once('message', (m) => {
      clearTimeout(timer)
      resolve(m as Record<string, unknown>)
    })
  })
  child.removeAllListeners('exit')
  return {
    process: child,
    message,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(timer)
    },
  }
}
