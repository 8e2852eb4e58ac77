import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createKeel, isKeelError } from '../src/index.js'
import { freshPrefix } from './support/cache.js'
import { testKeel } from './support/keel.js'
import { readStack, stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'
import { buildForWorkers } from './support/worker.js'

const here = dirname(fileURLToPath(import.meta.url))
const open: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await stackCtl('start', 'redis')
  await Promise.all(open.splice(0).map((k) => k.close()))
})
afterAll(() => stackCtl('start', 'redis'))

/** A loopback port nothing listens on: connecting to it is refused. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

describe('a Postgres host keel cannot reach', () => {
  it('is KEEL_DB_UNAVAILABLE with the cause and the host, never the password', async () => {
    const port = await closedPort()
    const keel = createKeel({
      postgres: { primary: { connectionString: `postgres://keel_app:s3cret-pw@127.0.0.1:${port}/keel` } },
    })
    open.push(keel)
    const db = keel.tenant('acme')
    for (const call of [() => db.query('SELECT 1'), () => db.transaction((tx) => tx.query('SELECT 1'))]) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isKeelError(error, 'KEEL_DB_UNAVAILABLE')).toBe(true)
      expect(error).toMatchObject({
        details: { host: 'primary', address: '127.0.0.1', port, code: 'ECONNREFUSED' },
        cause: { code: 'ECONNREFUSED' },
      })
      expect(`${(error as Error).message} ${JSON.stringify(error)}`).not.toContain('s3cret-pw')
    }
  })

  it('a connection the server refuses (no such database) is KEEL_DB_UNAVAILABLE too, without the password', async () => {
    const url = new URL(readStack().primary.url)
    url.password = 'wrong-s3cret'
    url.pathname = '/no_such_database'
    const keel = testKeel({ connectionString: url.toString() })
    open.push(keel)
    const error = await keel
      .tenant('acme')
      .query('SELECT 1')
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(error).toMatchObject({ code: 'KEEL_DB_UNAVAILABLE', details: { host: 'primary', code: '3D000' } })
    expect(`${(error as Error).message} ${JSON.stringify(error)}`).not.toContain('wrong-s3cret')
  })
})

describe('the cache Redis going down', () => {
  it('health says down as soon as Redis is unreachable, and up again once it answers', async () => {
    const keel = testKeel({ cache: { redis: { url: readStack().redis.url }, prefix: freshPrefix() } })
    open.push(keel)
    await waitFor('the cache Redis to be up', async () => (await keel.health()).cache.redis === 'up')
    await stackCtl('stop', 'redis')
    // No call has failed yet (the breaker is closed): health must look at Redis itself.
    expect((await keel.health()).cache.redis).toBe('down')
    await stackCtl('start', 'redis')
    await waitFor('the cache Redis to be up again', async () => (await keel.health()).cache.redis === 'up')
  })

  it('keel without a logger prints nothing while its Redis is down and a Postgres host is unreachable', async () => {
    const stack = readStack()
    await stackCtl('stop', 'redis')
    const out = join(mkdtempSync(join(tmpdir(), 'keel-silent-')), 'result.json')
    const child = spawn(
      process.execPath,
      [
        join(here, 'fixtures/silent-without-logger.mjs'),
        JSON.stringify({
          dist: buildForWorkers(),
          pgUrl: stack.primary.url,
          deadPgUrl: `postgres://keel_app:pw@127.0.0.1:${await closedPort()}/keel`,
          redisUrl: stack.redis.url,
          out,
        }),
      ],
      { cwd: join(here, '..'), stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let printed = ''
    child.stdout.on('data', (d) => (printed += d))
    child.stderr.on('data', (d) => (printed += d))
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    expect(printed).toBe('')
    expect(code).toBe(0)
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual({
      values: Array(30).fill(1),
      redis: 'down',
      unreachable: 'KEEL_DB_UNAVAILABLE',
    })
  })
})
