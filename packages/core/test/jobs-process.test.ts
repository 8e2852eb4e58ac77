import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Keel } from '../src/index.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { buildForWorkers } from './support/worker.js'

const here = dirname(fileURLToPath(import.meta.url))
let dist: string
const open: Keel[] = []

beforeAll(() => {
  dist = buildForWorkers()
})
afterEach(async () => {
  await Promise.all(open.splice(0).map((k) => k.close()))
})

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  output: string
}

/**
 * Runs test/fixtures/jobs-process.mjs, which never calls process.exit. A process still alive after
 * `boundMs` is killed: something keel opened kept it running after keel.close().
 */
function runProcess(mode: string, redisUrl: string, boundMs = 20_000): Promise<Exit> {
  const child = spawn(
    process.execPath,
    [
      join(here, 'fixtures/jobs-process.mjs'),
      JSON.stringify({
        dist,
        pgUrl: readStack().primary.url,
        redisUrl,
        queue: `exit${randomBytes(4).toString('hex')}`,
        mode,
      }),
    ],
    { cwd: join(here, '..'), stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), boundMs)
  return new Promise((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, output })
    })
  })
}

describe('a process that used jobs', () => {
  it('exits by itself after an enqueue and keel.close(), and prints nothing', async () => {
    expect(await runProcess('enqueue', readStack().redis.url)).toEqual({ code: 0, signal: null, output: '' })
  }, 30_000)

  it('exits by itself after running a worker and keel.close(), and prints nothing', async () => {
    expect(await runProcess('worker', readStack().redis.url)).toEqual({ code: 0, signal: null, output: '' })
  }, 30_000)
})

describe('jobs Redis unreachable', () => {
  it('every jobs call fails with KEEL_JOBS_UNAVAILABLE; without a logger nothing is printed, and the process exits', async () => {
    const url = `redis://127.0.0.1:${await closedPort()}`
    expect(await runProcess('unreachable', url)).toEqual({ code: 0, signal: null, output: '' })
  }, 30_000)

  it('enqueue fails fast with the code and the cause; Redis errors go to the logger', async () => {
    const logged: Array<{ obj: object; msg?: string }> = []
    const log = (obj: object, msg?: string) => {
      logged.push({ obj, msg })
    }
    const keel = testKeel({
      jobs: { redis: { url: `redis://127.0.0.1:${await closedPort()}` }, closeTimeoutMs: 1_000 },
      logger: { debug: log, info: log, warn: log, error: log },
    })
    open.push(keel)
    keel.defineJob('unreachable.job', { schema: z.object({}), handler: async () => undefined })
    // A bound, not a measurement: a call that waits on Redis forever fails here.
    const bound = new Promise((resolve) => setTimeout(() => resolve('still pending after 10 s'), 10_000))
    const outcome = await Promise.race([
      keel
        .tenant('acme')
        .enqueue('unreachable.job', {})
        .then(
          () => 'enqueued',
          (error: unknown) => error,
        ),
      bound,
    ])
    expect(outcome).toMatchObject({ name: 'KeelError', code: 'KEEL_JOBS_UNAVAILABLE' })
    expect((outcome as Error).cause).toBeInstanceOf(Error)
    expect(logged.some(({ obj }) => String((obj as { err?: unknown }).err).includes('ECONNREFUSED'))).toBe(
      true,
    )
  }, 30_000)
})
