import type { Redis } from 'ioredis'

// Priority of a tenant's next job: 1 when it has nothing pending, else one more than its last. BullMQ runs
// lower numbers first (FIFO among equals), so the n-th pending job of every tenant competes with the
// n-th of every other: a tenant with one job never waits behind another tenant's backlog.
// With a third key, the idempotency claim comes first, in the same call: 0 means "already claimed".
const FAIR_PRIORITY = `
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'PX', ARGV[3], 'NX') then return 0 end
local pending = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local p = 1
if pending > 1 then p = math.min((tonumber(redis.call('GET', KEYS[2])) or 0) + 1, tonumber(ARGV[1])) end
redis.call('SET', KEYS[2], p, 'PX', ARGV[2])
return p`

const DONE = `
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0`

// A running job holds a slot (member = job id, score = when the slot lapses) until it ends; slots of
// workers that died lapse after the lock duration.
const ACQUIRE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0`

interface SchedulerRedis extends Redis {
  keelFairPriority(keys: number, ...args: Array<string | number>): Promise<number>
  keelFairDone(pending: string): Promise<number>
  keelSlotAcquire(
    running: string,
    now: number,
    until: number,
    member: string,
    cap: number,
    ttlMs: number,
  ): Promise<number>
}

/** Fair ordering tier: priorities 1-10 map to bands; within a band, per-tenant positions. */
const BAND = 2 ** 17
const MAX_POSITION = BAND - 1

/**
 * Fairness across tenants on plain BullMQ (groups are a Pro feature): per-tenant positions as BullMQ
 * priorities, and an optional fleet-wide cap on a tenant's running jobs. See ADR 0013.
 */
export class FairScheduler {
  readonly #redis: SchedulerRedis
  readonly #prefix: string

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis as SchedulerRedis
    this.#prefix = prefix
    this.#redis.defineCommand('keelFairPriority', { lua: FAIR_PRIORITY })
    this.#redis.defineCommand('keelFairDone', { numberOfKeys: 1, lua: DONE })
    this.#redis.defineCommand('keelSlotAcquire', { numberOfKeys: 1, lua: ACQUIRE })
  }

  #idemKey(tenantId: string, jobId: string): string {
    return `${this.#prefix}:idem:{${tenantId}}:${jobId}`
  }

  /**
   * The BullMQ priority for a tenant's next job in `band` (1 first .. 10 last), taking the tenant's next
   * fair position. With a `claimId`, the id is first claimed for `retentionMs` in the same round trip;
   * null when another call already claimed it (nothing was counted).
   */
  async priority(
    tenantId: string,
    band: number,
    ttlMs: number,
    claim?: { id: string; retentionMs: number },
  ): Promise<number | null> {
    const pending = `${this.#prefix}:pending:{${tenantId}}`
    const last = `${this.#prefix}:last:{${tenantId}}`
    const position =
      claim === undefined
        ? await this.#redis.keelFairPriority(2, pending, last, MAX_POSITION, ttlMs)
        : await this.#redis.keelFairPriority(
            3,
            pending,
            last,
            this.#idemKey(tenantId, claim.id),
            MAX_POSITION,
            ttlMs,
            claim.retentionMs,
          )
    return position === 0 ? null : (band - 1) * BAND + position
  }

  /** Releases a claim whose enqueue failed, so a retry can enqueue; its position is given back too. */
  async unclaim(tenantId: string, jobId: string): Promise<void> {
    await this.#redis.del(this.#idemKey(tenantId, jobId))
    await this.done(tenantId)
  }

  async done(tenantId: string): Promise<void> {
    await this.#redis.keelFairDone(`${this.#prefix}:pending:{${tenantId}}`)
  }

  /** A running slot for the tenant, or false when it already runs `cap` jobs fleet-wide. */
  async acquire(
    tenantId: string,
    jobId: string,
    cap: number,
    lockMs: number,
  ): Promise<{ release(): void } | false> {
    const key = `${this.#prefix}:running:{${tenantId}}`
    const hold = () => {
      const now = Date.now()
      return this.#redis.keelSlotAcquire(key, now, now + lockMs, jobId, cap, lockMs * 2)
    }
    if ((await hold()) !== 1) return false
    // Keep the slot while the job runs; a dead worker's slot lapses after lockMs.
    const heartbeat = setInterval(
      () => void hold().catch(() => undefined),
      Math.max(500, Math.floor(lockMs / 2)),
    )
    heartbeat.unref()
    return {
      release: () => {
        clearInterval(heartbeat)
        this.#redis.zrem(key, jobId).catch(() => undefined)
      },
    }
  }

  /** Indexes a job that exhausted its retries under its tenant, newest first. */
  async deadLetter(tenantId: string, jobId: string, at: number, retentionMs: number): Promise<void> {
    const key = `${this.#prefix}:dead:{${tenantId}}`
    await this.#redis
      .multi()
      .zadd(key, at, jobId)
      .zremrangebyscore(key, '-inf', at - retentionMs)
      .pexpire(key, retentionMs)
      .exec()
  }

  async deadLetters(tenantId: string, limit: number): Promise<string[]> {
    return this.#redis.zrevrange(`${this.#prefix}:dead:{${tenantId}}`, 0, limit - 1)
  }

  /** Takes a job out of the tenant's dead letters; false when it was not there. */
  async undead(tenantId: string, jobId: string): Promise<boolean> {
    return (await this.#redis.zrem(`${this.#prefix}:dead:{${tenantId}}`, jobId)) === 1
  }

  /** A re-driven job is pending again for its tenant's fair position. */
  async repend(tenantId: string, ttlMs: number): Promise<void> {
    await this.#redis
      .multi()
      .incr(`${this.#prefix}:pending:{${tenantId}}`)
      .pexpire(`${this.#prefix}:pending:{${tenantId}}`, ttlMs)
      .exec()
  }

  async close(): Promise<void> {
    await this.#redis.quit().catch(() => undefined)
  }
}
