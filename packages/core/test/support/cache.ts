import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import type { KeelConfig } from '../../src/index.js'
import { testKeel } from './keel.js'
import { readStack } from './stack.js'

/** A prefix of its own per test, so suites never see each other's keys or messages. */
export function freshPrefix(): string {
  return `kt${randomBytes(4).toString('hex')}`
}

export function redisClient(): Redis {
  const client = new Redis(readStack().redis.url, { maxRetriesPerRequest: 1 })
  // Tests stop Redis on purpose; a client of theirs must not report that as an unhandled error.
  client.on('error', () => undefined)
  return client
}

export function cacheKeel(
  cache: Partial<NonNullable<KeelConfig['cache']>> & { prefix: string },
  withRedis = true,
) {
  return testKeel({
    cache: {
      ...(withRedis ? { redis: { url: readStack().redis.url, commandTimeoutMs: 200 } } : {}),
      jitter: 0,
      ...cache,
    },
  })
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
