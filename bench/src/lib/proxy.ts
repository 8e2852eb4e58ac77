import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DelayProxy {
  port: number
  stop(): Promise<void>
}

/** Starts dist/delay-proxy.js as a child process and waits for the port it listens on. */
export async function startDelayProxy(
  targetHost: string,
  targetPort: number,
  delayMs: number,
): Promise<DelayProxy> {
  const here = dirname(fileURLToPath(import.meta.url))
  const script = join(here, 'delay-proxy.js')
  if (!existsSync(script))
    throw new Error(`${script} is missing: build the bench first (pnpm --filter @keel/bench build)`)
  const child: ChildProcess = fork(script, [], {
    env: {
      ...process.env,
      PROXY_TARGET_HOST: targetHost,
      PROXY_TARGET_PORT: String(targetPort),
      PROXY_DELAY_MS: String(delayMs),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('delay proxy did not start within 10 s')), 10_000)
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`delay proxy exited early (code ${code})`)))
    child.once('message', (message) => {
      clearTimeout(timer)
      resolve((message as { port: number }).port)
    })
  })
  return {
    port,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    },
  }
}
