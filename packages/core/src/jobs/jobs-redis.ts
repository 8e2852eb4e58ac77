import type { Redis } from 'ioredis'
import type { Logger } from '../config/config-schema.js'
import { KeelError } from '../errors.js'
import { isClusterTopology, openRedis, type RedisTopology } from '../redis/redis-connection.js'

/**
 * The Redis connections keel's jobs open, and only those: keel closes every one of them in close().
 * BullMQ's Queue and Worker never close a connection they were handed (they did not create it), so a
 * connection keel gave them and forgot kept the process alive after keel.close() (issue #10, item 7).
 */
export class JobsRedis {
  readonly #topology: RedisTopology
  /** A Redis Cluster: BullMQ's queue names carry a hash tag (ADR 0039). */
  readonly cluster: boolean
  readonly #logger: Logger | undefined
  readonly #open = new Set<Redis>()

  constructor(topology: RedisTopology, logger: Logger | undefined) {
    this.#topology = topology
    this.cluster = isClusterTopology(topology)
    this.#logger = logger
  }

  /**
   * A producer connection fails a command after one reconnect attempt (a caller gets an error, not a
   * hang); a worker's retries forever, as BullMQ's blocking calls need.
   */
  open(use: 'producer' | 'worker'): Redis {
    // A worker's connection is only the template BullMQ duplicates for each Worker's two connections: it
    // never connects itself.
    const redis = openRedis(this.#topology, {
      ...(use === 'worker' ? { maxRetriesPerRequest: null, lazyConnect: true } : { maxRetriesPerRequest: 1 }),
      // A Cluster keeps the commands sent while it has no node to talk to in its offline queue, forever
      // (maxRetriesPerRequest applies per node, not there): an enqueue would hang while no node answers.
      // Without that queue, such a command fails at once; QueueRegistry.ready() holds the first calls
      // (bounded) until the first connection, as the queue did.
      ...(use === 'producer' && this.cluster ? { enableOfflineQueue: false } : {}),
      // How long ioredis lets a socket it ends close by itself, in a timer that holds the process: 2 s by
      // default, also for a socket that never connected (Redis down), whose close already happened.
      disconnectTimeout: 200,
    })
    this.#watch(redis)
    if (use === 'worker') {
      // BullMQ closes the duplicates it made, but not when Redis is gone (its close waits for a connection
      // first): keel keeps them, to cut them in close().
      const duplicate = redis.duplicate.bind(redis)
      redis.duplicate = (...args: Parameters<Redis['duplicate']>) => {
        const copy = duplicate(...args)
        this.#watch(copy)
        return copy
      }
    }
    return redis
  }

  #watch(redis: Redis): void {
    // Every BullMQ Queue and Worker sharing the connection adds its listeners: no warning on stderr.
    redis.setMaxListeners(0)
    let down = false
    redis.on('error', (error: Error) => {
      // Once per outage at warn (ioredis reports every reconnect attempt); the rest at debug.
      if (down) this.#logger?.debug({ err: error }, 'keel jobs: redis connection error')
      else this.#logger?.warn({ err: error, signal: 'jobs_redis_down' }, 'keel jobs: redis connection failed')
      down = true
    })
    redis.on('ready', () => {
      if (down) this.#logger?.info({ signal: 'jobs_redis_up' }, 'keel jobs: redis connection back')
      down = false
    })
    this.#open.add(redis)
  }

  async close(): Promise<void> {
    const connections = [...this.#open]
    this.#open.clear()
    await Promise.all(
      connections.map(async (redis) => {
        // QUIT only where Redis answers; a connection still trying to reach it would wait forever.
        if (redis.status === 'ready') await redis.quit().catch(() => undefined)
        if (redis.status !== 'end') redis.disconnect()
      }),
    )
  }
}

/** A failure of the jobs Redis (or of BullMQ on it) as keel's error; keel's own errors pass through. */
export function jobsUnavailable(error: unknown, operation: string): unknown {
  if (error instanceof KeelError) return error
  return new KeelError('KEEL_JOBS_UNAVAILABLE', `the jobs Redis failed during ${operation}`, {
    cause: error,
    details: { operation },
  })
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
])

/** An error that says Redis cannot be reached (not that a command failed). */
export function isConnectionError(error: unknown): boolean {
  const e = error as { code?: unknown; name?: unknown; message?: unknown } | null
  return (
    (typeof e?.code === 'string' && CONNECTION_CODES.has(e.code)) ||
    e?.name === 'MaxRetriesPerRequestError' ||
    (typeof e?.message === 'string' && e.message.startsWith('Connection is closed'))
  )
}
