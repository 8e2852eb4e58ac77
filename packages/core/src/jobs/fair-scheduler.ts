import type { Redis } from 'ioredis'
import { BULLMQ_PACKR_OPTIONS, Packr } from './bullmq-internals.js'
import { DELAYED_KEYS, type EnqueueScripts, PRIORITIZED_KEYS } from './enqueue-script.js'
import { FAIR_DONE, FAIR_PRIORITY } from './lua/scripts.js'

interface SchedulerRedis extends Redis {
  keelFairPriority(keys: number, ...args: Array<string | number>): Promise<number>
  keelFairDone(fair: string, ttlMs: number): Promise<number>
  keelEnqueue(keys: number, ...args: Array<string | number | Buffer>): Promise<string | number>
  keelEnqueueDelayed(keys: number, ...args: Array<string | number | Buffer>): Promise<string | number>
}

/** Fair ordering tier: priorities 1-10 map to bands; within a band, per-tenant positions. */
const BAND = 2 ** 17
const MAX_POSITION = BAND - 1

/** The first priority of a band (1 first .. 10 last); a job's priority is this plus its position. */
export function bandOffset(band: number): number {
  return (band - 1) * BAND
}

/** BullMQ's own argument packing (its `Packr` options), so the scripts read what `Queue.add` sends. */
const packer = new Packr(BULLMQ_PACKR_OPTIONS)

/** One job for {@link FairScheduler.add}. */
export interface FairJob {
  readonly tenantId: string
  readonly name: string
  readonly jobId: string
  /** The job's data as BullMQ stores it (JSON). */
  readonly data: string
  /** BullMQ's job options, packed (see {@link FairScheduler.packOptions}); `priority` is the band's offset. */
  readonly opts: Buffer
  /** Delayed jobs go to BullMQ's delayed set (`opts` then carries `delay`). */
  readonly delayed: boolean
}

/**
 * Fairness across tenants on plain BullMQ (groups are a Pro feature), in one job's queue (ADR 0025):
 * per-tenant positions as BullMQ priorities and idempotency claims. See ADR 0013, 0014 and 0019 (one round
 * trip per enqueue). It shares the producer's connection and does not close it.
 */
export class FairScheduler {
  readonly #redis: SchedulerRedis
  readonly #prefix: string
  readonly #queuePrefix: string
  readonly #prioritizedKeys: readonly string[]
  readonly #delayedKeys: readonly string[]
  readonly #ttlMs: number

  /**
   * @param queueKeys BullMQ's keys of the queue (`QueueKeys.getKeys`).
   * @param scripts keel's enqueue scripts; without them only the two-round-trip path ({@link priority})
   *   is available.
   */
  constructor(
    redis: Redis,
    prefix: string,
    queueKeys: Readonly<Record<string, string>>,
    ttlMs: number,
    scripts: EnqueueScripts | undefined,
  ) {
    this.#redis = redis as SchedulerRedis
    this.#prefix = prefix
    this.#ttlMs = ttlMs
    this.#queuePrefix = queueKeys['']!
    this.#prioritizedKeys = PRIORITIZED_KEYS.map((k) => queueKeys[k]!)
    this.#delayedKeys = DELAYED_KEYS.map((k) => queueKeys[k]!)
    this.#redis.defineCommand('keelFairPriority', { lua: FAIR_PRIORITY })
    this.#redis.defineCommand('keelFairDone', { numberOfKeys: 1, lua: FAIR_DONE })
    if (scripts !== undefined) {
      this.#redis.defineCommand('keelEnqueue', { lua: scripts.prioritized.lua })
      this.#redis.defineCommand('keelEnqueueDelayed', { lua: scripts.delayed.lua })
    }
  }

  #idemKey(tenantId: string, jobId: string): string {
    return `${this.#prefix}:idem:{${tenantId}}:${jobId}`
  }

  #fairKey(tenantId: string): string {
    return `${this.#prefix}:fair:{${tenantId}}`
  }

  /** Packs BullMQ job options as `Queue.add` does (after its `optsAsJSON`, a no-op for keel's options). */
  static packOptions(opts: Readonly<Record<string, unknown>>): Buffer {
    return packer.pack(opts)
  }

  /**
   * Takes the tenant's fair position and adds the job, in one script: BullMQ's add with keel's block (ADR
   * 0019). A job id that already exists (an idempotency key's, an outbox row relayed twice) is BullMQ's
   * duplicate: nothing is added or counted. The script is atomic: when it fails, nothing of it happened.
   */
  async add(job: FairJob): Promise<void> {
    const args = packer.pack([
      this.#queuePrefix,
      job.jobId,
      job.name,
      Date.now(),
      null,
      null,
      undefined,
      undefined,
      null,
      null,
    ])
    const keys = job.delayed ? this.#delayedKeys : this.#prioritizedKeys
    const run = job.delayed ? this.#redis.keelEnqueueDelayed : this.#redis.keelEnqueue
    const result = await run.call(
      this.#redis,
      keys.length + 1,
      ...keys,
      this.#fairKey(job.tenantId),
      args,
      job.data,
      job.opts,
      MAX_POSITION,
      this.#ttlMs,
    )
    if (typeof result === 'number' && result < 0) {
      throw new Error(`BullMQ's add script failed with code ${result} for job ${job.jobId}`)
    }
  }

  /**
   * The two-round-trip fallback (ADR 0019): the BullMQ priority for a tenant's next job in `band`, taking
   * the tenant's next fair position, for a `Queue.add` after it. With a `claim`, the id is first claimed
   * for `retentionMs` in the same round trip; null when the job exists or another call already claimed
   * its id (nothing was counted).
   */
  async priority(
    tenantId: string,
    band: number,
    claim?: { id: string; retentionMs: number },
  ): Promise<number | null> {
    const fair = this.#fairKey(tenantId)
    const position =
      claim === undefined
        ? await this.#redis.keelFairPriority(1, fair, MAX_POSITION, this.#ttlMs)
        : await this.#redis.keelFairPriority(
            3,
            fair,
            `${this.#queuePrefix}${claim.id}`,
            this.#idemKey(tenantId, claim.id),
            MAX_POSITION,
            this.#ttlMs,
            claim.retentionMs,
          )
    return position === 0 ? null : bandOffset(band) + position
  }

  /** Releases a claim whose (two-round-trip) enqueue failed, so a retry can enqueue; gives its position back. */
  async unclaim(tenantId: string, jobId: string): Promise<void> {
    await this.#redis.del(this.#idemKey(tenantId, jobId))
    await this.done(tenantId)
  }

  async done(tenantId: string): Promise<void> {
    await this.#redis.keelFairDone(this.#fairKey(tenantId), this.#ttlMs)
  }

  /** A re-driven job is pending again for its tenant's fair position. */
  async repend(tenantId: string): Promise<void> {
    const fair = this.#fairKey(tenantId)
    // One job fewer done: one more pending, the tenant's positions unchanged.
    await this.#redis.multi().hincrby(fair, 'done', -1).pexpire(fair, this.#ttlMs).exec()
  }
}
