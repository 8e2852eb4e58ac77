import { randomUUID } from 'node:crypto'
import { type Cluster, Command, type Redis } from 'ioredis'
import type { Logger } from '../config/config-schema.js'
import { isClusterClient, openRedis, type RedisTopology } from '../redis/redis-connection.js'
import type { CacheEntry } from './cache-entry.js'
import type { CacheKeys } from './cache-keys.js'
import { CircuitBreaker } from './circuit-breaker.js'
import { CommandDeadlines } from './command-deadlines.js'
import { counterString } from './serializer.js'
import type { Read, SharedTier } from './shared-tier.js'

// Writes the value only if no invalidation happened since the load began (the version keys still hold
// what the loader saw), then tells waiting processes. Atomic: an invalidation cannot slip in between.
const CAS_SET = `
for i = 2, #KEYS do
  local current = redis.call('GET', KEYS[i]) or '0'
  if current ~= ARGV[i + 3] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`

const UNLOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

interface KeelRedis extends Redis {
  keelCasSet(...args: Array<string | Buffer | number>): Promise<number>
  keelUnlock(lock: string, token: string): Promise<number>
}

export interface RedisTierOptions {
  /** Where Redis is (any topology, ADR 0039); keel opens two connections of its own there. */
  readonly topology: RedisTopology
  readonly commandTimeoutMs: number
  readonly keys: CacheKeys
  readonly breaker: { readonly threshold: number; readonly resetMs: number }
  /** The entry codec's decoder, handed in: the tier moves bytes, the cache decides what they hold. */
  readonly decode: (buffer: Buffer | null) => CacheEntry | undefined
  readonly logger: Logger | undefined
}

export interface RedisTierEvents {
  readonly onMessage: (channel: string, message: string) => void
  /** The subscription was lost and is back: invalidations may have been missed meanwhile. */
  readonly onResubscribed: () => void
  /**
   * The first subscription is confirmed: from now on this process hears every invalidation. What L1
   * holds from before (kept only while Redis was unusable) may have missed some.
   */
  readonly onListening: () => void
  /**
   * The command connection was lost and is back: what could not be sent meanwhile can be now. Apart
   * from onResubscribed because the two connections come back in either order.
   */
  readonly onCommandsBack: () => void
  readonly onBreaker: (open: boolean) => void
}

/** MGET replying with Buffers, as ioredis's `mgetBuffer` sends it. */
const MGET_BUFFERS = { replyEncoding: null } as const

/**
 * The shared tier and the coordination channel: one command connection (per-command timeout, no
 * retries, behind a circuit breaker) and one subscriber connection. Every method either succeeds or
 * throws quickly; the cache above treats a throw as "Redis unavailable" and carries on without it.
 * The command timeout is keel's (CommandDeadlines: one timer for all commands in flight), not
 * ioredis's `commandTimeout` (a timer per command).
 */
export class RedisTier implements SharedTier {
  readonly processId = randomUUID()
  readonly #command: KeelRedis
  readonly #subscriber: Redis
  readonly #breaker: CircuitBreaker
  readonly #keys: CacheKeys
  readonly #deadlines: CommandDeadlines
  readonly #decode: (buffer: Buffer | null) => CacheEntry | undefined
  readonly #firstReady: Promise<void>
  #subscriberLost = false
  /** The events channel's subscription is confirmed and its connection up: invalidations are heard. */
  #listening = false
  #commandLost = false
  #closed = false

  constructor(options: RedisTierOptions, events: RedisTierEvents) {
    const { topology, commandTimeoutMs, keys, breaker, logger } = options
    this.#keys = keys
    this.#decode = options.decode
    this.#breaker = new CircuitBreaker(breaker.threshold, breaker.resetMs, events.onBreaker)
    this.#deadlines = new CommandDeadlines(commandTimeoutMs)
    const connection = {
      maxRetriesPerRequest: 0,
      connectTimeout: Math.max(1_000, commandTimeoutMs * 10),
      // Reconnect quickly, forever: the breaker, not the connection, decides whether commands are sent.
      retryStrategy: (times: number) => Math.min(50 * times, 1_000),
      lazyConnect: false,
    }
    this.#command = openRedis(topology, { ...connection, enableOfflineQueue: true }) as KeelRedis
    this.#command.defineCommand('keelCasSet', { lua: CAS_SET })
    this.#command.defineCommand('keelUnlock', { numberOfKeys: 1, lua: UNLOCK })
    this.#command.on('error', (error: Error) =>
      logger?.debug({ err: error }, 'keel cache: redis connection error'),
    )
    this.#command.on('close', () => {
      if (!this.#closed) this.#commandLost = true
    })
    this.#command.on('ready', () => {
      if (this.#commandLost) {
        this.#commandLost = false
        events.onCommandsBack()
      }
    })
    // The subscription is sent again by the 'ready' handler below, whose reply it waits for and whose
    // failure it handles. ioredis's own re-subscribe is not awaited by anyone: a connection closed
    // before Redis answered it became an unhandled rejection. A cluster re-subscribes through ioredis's
    // cluster subscriber, which needs its own.
    this.#subscriber = openRedis(topology, {
      ...connection,
      enableOfflineQueue: true,
      ...('cluster' in topology ? {} : { autoResubscribe: false }),
    })
    this.#subscriber.on('error', (error: Error) =>
      logger?.debug({ err: error }, 'keel cache: redis subscriber error'),
    )
    this.#subscriber.on('message', events.onMessage)
    this.#subscriber.on('close', () => {
      this.#listening = false
      if (!this.#closed) this.#subscriberLost = true
    })
    const channels = [keys.events, keys.ackChannel(this.processId)]
    // Listening only once Redis answered the SUBSCRIBE: then every invalidation is heard.
    const listen = (heard: () => void) =>
      void this.#subscriber.subscribe(...channels).then(
        () => {
          if (this.#closed || this.#subscriber.status !== 'ready') return
          this.#listening = true
          heard()
        },
        () => undefined,
      )
    this.#subscriber.on('ready', () => {
      if (!this.#subscriberLost) return
      this.#subscriberLost = false
      // ioredis says 'ready' before any re-subscribe of its own is answered: keel's, awaited, decides.
      listen(events.onResubscribed)
    })
    listen(events.onListening)
    // The first calls wait (bounded) for the first connection, so a cold start does not stampede the
    // database while Redis is merely still connecting.
    this.#firstReady = new Promise<void>((resolve) => {
      const done = () => resolve()
      this.#command.once('ready', done)
      setTimeout(done, connection.connectTimeout).unref()
    })
  }

  get breakerOpen(): boolean {
    return this.#breaker.open
  }

  /**
   * Whether Redis answers now: a PING within the command timeout on a ready connection. For health,
   * which must not wait for the breaker to notice (it only counts failures of real calls, and an idle
   * process makes none); it does not count toward the breaker either.
   */
  async ping(): Promise<boolean> {
    if (this.#closed) return false
    // Like the first calls, the first health check waits (bounded) for the first connection; after
    // that a connection that is not ready is down at once.
    if (this.#command.status !== 'ready') await this.#firstReady
    if ((this.#command.status as string) !== 'ready') return false
    try {
      return (await this.#deadlines.within(this.#command.ping())) === 'PONG'
    } catch {
      return false
    }
  }

  /** True when commands should be tried at all. */
  usable(): boolean {
    return !this.#closed && this.#breaker.allows()
  }

  /**
   * Whether L1 may keep an entry now: this process hears every invalidation (its subscription is
   * confirmed), or Redis is unusable and L1 is all the cache there is (degraded mode: L1 is cleared when
   * the subscription comes back). Not while Redis answers but the subscription is not confirmed yet (a
   * process's first moments, a subscriber reconnecting): an entry kept then could miss an invalidation
   * published meanwhile and be served after the invalidation resolved everywhere else.
   */
  l1Safe(): boolean {
    return this.#listening || !this.usable() || this.#command.status !== 'ready'
  }

  async #run<T>(fn: (redis: KeelRedis) => Promise<T>): Promise<T> {
    if (this.#command.status !== 'ready') {
      await this.#firstReady
      // Re-read: the status may have changed while we waited.
      if ((this.#command.status as string) !== 'ready') {
        this.#breaker.failure()
        throw new Error(`redis is ${this.#command.status}`)
      }
    }
    try {
      const result = await this.#deadlines.within(fn(this.#command))
      this.#breaker.success()
      return result
    } catch (error) {
      this.#breaker.failure()
      throw error
    }
  }

  /**
   * The entry and the current invalidation counters, in one MGET of `keys` ([value, ...counters], built
   * once per key: ioredis copies the arguments).
   */
  read(keys: readonly string[]): Promise<Read> {
    return this.readThen(keys, same, rethrow)
  }

  /**
   * `read`, with `then` (or `otherwise`, when it fails) run in the reply's own reaction: the hot path of
   * a Redis hit, with no async layer and no promise between the reply and what the cache does with it
   * (the breaker's bookkeeping, the decode, then the caller's continuation).
   */
  readThen<R>(
    keys: readonly string[],
    then: (read: Read) => R | PromiseLike<R>,
    otherwise: (error: unknown) => R | PromiseLike<R>,
  ): Promise<R> {
    if (this.#command.status !== 'ready') {
      return this.#run((r) => r.mgetBuffer(...keys)).then((raw) => then(this.#toRead(raw)), otherwise)
    }
    const command = new Command('mget', keys as string[], MGET_BUFFERS)
    this.#deadlines.track(command)
    return (this.#command.sendCommand(command) as Promise<Array<Buffer | null>>).then(
      (raw) => {
        this.#breaker.success()
        return then(this.#toRead(raw))
      },
      (error: unknown) => {
        this.#breaker.failure()
        return otherwise(error)
      },
    )
  }

  readonly #toRead = (raw: Array<Buffer | null>): Read => {
    const value = raw[0] ?? null
    const versions: string[] = new Array(raw.length - 1)
    for (let i = 1; i < raw.length; i++) {
      const v = raw[i]
      versions[i - 1] = v === null || v === undefined ? '0' : counterString(v, 0, v.length)
    }
    return { entry: this.#decode(value), versions, bytes: value?.length ?? 0 }
  }

  /** Writes if the versions are unchanged, and publishes the fill; false when fenced out. */
  async casWrite(
    valueKey: string,
    versionKeys: readonly string[],
    expected: readonly string[],
    payload: Buffer,
    ttlMs: number,
    fillMessage: string,
  ): Promise<boolean> {
    const result = await this.#run((r) =>
      r.keelCasSet(
        1 + versionKeys.length,
        valueKey,
        ...versionKeys,
        payload,
        Math.max(1, Math.ceil(ttlMs)),
        this.#keys.events,
        fillMessage,
        ...expected,
      ),
    )
    return result === 1
  }

  /** A token when this process now holds the key's loader lock, else undefined. */
  async tryLock(lockKey: string, ttlMs: number): Promise<string | undefined> {
    const token = `${this.processId}:${randomUUID()}`
    const ok = await this.#run((r) => r.set(lockKey, token, 'PX', ttlMs, 'NX'))
    return ok === 'OK' ? token : undefined
  }

  unlock(lockKey: string, token: string): void {
    // Best effort: the lock expires by itself anyway.
    this.#run((r) => r.keelUnlock(lockKey, token)).catch(() => undefined)
  }

  /**
   * Bumps the counters, drops the values, and broadcasts; resolves to the number of receivers. On a
   * cluster PUBLISH counts only the subscribers of the node it ran on (the tenant's slot owner) while
   * the message reaches every node's, so the fleet's count is the sum of every node's NUMSUB, asked
   * alongside: waiting for PUBLISH's count alone let invalidate() resolve before processes subscribed
   * elsewhere had dropped their copies.
   */
  async invalidate(
    keyVersions: readonly string[],
    valueKeys: readonly string[],
    tagVersions: readonly string[],
    message: string,
    countWithinMs: number,
  ): Promise<number> {
    const fleet = isClusterClient(this.#command) ? this.#clusterSubscribers(countWithinMs) : undefined
    const results = await this.#run((r) => {
      const pipeline = r.multi()
      for (const key of keyVersions) pipeline.incr(key)
      for (const key of tagVersions) pipeline.incr(key)
      if (valueKeys.length > 0) pipeline.del(...valueKeys)
      pipeline.publish(this.#keys.events, message)
      return pipeline.exec()
    })
    const last = results?.at(-1)
    if (last === undefined || last[0] !== null) throw last?.[0] ?? new Error('invalidation failed')
    const here = Number(last[1])
    return fleet === undefined ? here : Math.max(here, await fleet)
  }

  /**
   * The events channel's subscribers on every node of the cluster, masters and replicas (ioredis
   * subscribes on any of them). A node that refuses (its connection is gone) counts 0: its subscribers
   * lost theirs too, and a subscriber that comes back clears its L1 (ADR 0012). A node that is only slow
   * is waited for up to `withinMs` (the invalidation's whole acknowledgement budget, not the command
   * timeout): counted 0, its subscribers were not waited for, and a busy node let invalidate() resolve
   * before they had dropped their copies (a CI run's stale read). One that does not answer in that time
   * counts as unknown (Infinity): the invalidation then waits out its budget.
   */
  async #clusterSubscribers(withinMs: number): Promise<number> {
    const nodes = (this.#command as unknown as Cluster).nodes('all')
    const counts = await Promise.all(nodes.map((node) => subscribersOn(node, this.#keys.events, withinMs)))
    return counts.reduce((total, n) => total + n, 0)
  }

  publish(channel: string, message: string): void {
    this.#run((r) => r.publish(channel, message)).catch(() => undefined)
  }

  async close(): Promise<void> {
    this.#closed = true
    // Bounded like every command: a frozen Redis must not hold close() forever.
    await Promise.allSettled([
      this.#deadlines.within(this.#command.quit()),
      this.#deadlines.within(this.#subscriber.quit()),
    ])
    this.#command.disconnect()
    this.#subscriber.disconnect()
  }
}

function same<T>(value: T): T {
  return value
}

function rethrow(error: unknown): never {
  throw error
}

/** NUMSUB of `channel` on one node: 0 if it refuses, Infinity if it does not answer within `withinMs`. */
async function subscribersOn(node: Redis, channel: string, withinMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<number>((resolve) => {
    timer = setTimeout(() => resolve(Number.POSITIVE_INFINITY), withinMs)
  })
  try {
    return await Promise.race([
      node.pubsub('NUMSUB', channel).then(
        (reply) => Number((reply as unknown[])[1] ?? 0),
        () => 0,
      ),
      late,
    ])
  } finally {
    clearTimeout(timer)
  }
}
