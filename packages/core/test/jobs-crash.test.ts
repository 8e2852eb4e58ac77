import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import type { Keel } from '../src/index.js'
import { redisClient } from './support/cache.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers } from './support/worker.js'

const here = dirname(fileURLToPath(import.meta.url))
const queue = `crash${randomBytes(4).toString('hex')}`
let dist: string
let producer: Keel
const redis = redisClient()
const children: ChildProcess[] = []

function startWorker(): Promise<ChildProcess> {
  const stack = readStack()
  const child = spawn(
    process.execPath,
    [
      join(here, 'fixtures/job-worker.mjs'),
      JSON.stringify({ dist, pgUrl: stack.primary.url, redisUrl: stack.redis.url, queue }),
    ],
    { cwd: join(here, '..'), stdio: ['pipe', 'pipe', 'inherit'] },
  )
  children.push(child)
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
    createInterface({ input: child.stdout! }).once('line', () => resolve(child))
  })
}

beforeAll(() => {
  dist = buildForWorkers()
  producer = testKeel({ jobs: { redis: { url: readStack().redis.url }, queue } })
  producer.defineJob('crashy', { schema: z.object({ ms: z.number() }), handler: async () => undefined })
})
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
  await producer.close()
  await redis.quit()
})

describe('a worker killed in the middle of a job', () => {
  it('loses nothing: the job runs again in another worker and completes exactly once', async () => {
    const first = await startWorker()
    const db = producer.tenant('acme')
    const { jobId } = await db.enqueue('crashy', { ms: 1_500 })
    await waitFor(
      'the first attempt to start',
      async () => Number(await redis.get(`${queue}:starts:${jobId}`)) === 1,
    )
    first.kill('SIGKILL')
    await startWorker()
    await waitFor(
      'the job to complete elsewhere',
      async () => (await db.jobStatus(jobId))?.state === 'completed',
      30_000,
    )
    expect(Number(await redis.get(`${queue}:starts:${jobId}`))).toBe(2)
    expect(Number(await redis.get(`${queue}:done:${jobId}`))).toBe(1)
    const status = await db.jobStatus(jobId)
    expect(status?.result).toMatch(/^finished by \d+$/)
    expect(status?.result).not.toBe(`finished by ${first.pid}`)
  }, 60_000)
})
