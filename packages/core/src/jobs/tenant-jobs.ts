import type { Redis } from 'ioredis'
import { SLOT_ACQUIRE } from './lua/scripts.js'

interface SlotsRedis extends Redis {
  keelSlotAcquire(
    running: string,
    now: number,
    until: number,
    member: string,
    cap: number,
    ttlMs: number,
  ): Promise<number>
}

/**
 * What keel keeps per tenant across all its job queues (ADR 0025): the running slots of
 * `jobs.tenantConcurrency` (a cap on the tenant's jobs, whatever their names) and the index of its dead
 * letters. Keys under `<prefix>:<jobs.queue>:keel`, as before jobs had a queue each. It shares the
 * producer's connection and does not close it.
 */
export class TenantJobs {
  readonly #redis: SlotsRedis
  readonly #prefix: string

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis as SlotsRedis
    this.#prefix = prefix
    this.#redis.defineCommand('keelSlotAcquire', { numberOfKeys: 1, lua: SLOT_ACQUIRE })
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
}
