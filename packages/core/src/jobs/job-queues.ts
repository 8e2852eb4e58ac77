import { createHash, randomUUID } from 'node:crypto'

/**
 * Each job name has a BullMQ queue of its own, `<jobs.queue>~<job name>` (ADR 0025): a worker listens
 * only on the queues of the jobs it runs, so it is never handed a job it does not know, and a job no
 * worker knows yet waits in its queue. `~` is in neither a queue nor a job name, so the pair is unambiguous.
 */
const SEPARATOR = '~'

export function queueOf(baseQueue: string, jobName: string, hashTag = false): string {
  return hashTagged(`${baseQueue}${SEPARATOR}${jobName}`, hashTag)
}

/**
 * On a Redis Cluster, a queue name in braces (ADR 0039): BullMQ's keys are `<prefix>:<queue>:<kind>`, so
 * `{<queue>}` is their hash tag and every key of one queue (and keel's fair hash and idempotency claims
 * under `<prefix>:<queue>:keel`) is in one slot, as BullMQ's multi-key scripts need, while different job
 * names spread over the masters. On one Redis (or Sentinel) names stay as they were: no layout change.
 */
export function hashTagged(queue: string, hashTag: boolean): string {
  return hashTag ? `{${queue}}` : queue
}

/**
 * A job's id: `<job name>~k-<digest>` for an idempotency key, else `<job name>~j-<uuid>`. The name in the
 * id tells jobStatus and redrive which queue holds the job, without a lookup.
 */
export function jobIdFor(tenantId: string, name: string, idempotencyKey: string | undefined): string {
  if (idempotencyKey === undefined) return `${name}${SEPARATOR}j-${randomUUID()}`
  // BullMQ ids cannot contain ':'; a digest also keeps long keys short and opaque.
  const digest = createHash('sha256').update(`${tenantId}\u0000${name}\u0000${idempotencyKey}`).digest('hex')
  return `${name}${SEPARATOR}k-${digest.slice(0, 40)}`
}

const JOB_ID = /^([A-Za-z0-9._-]{1,100})~[jk]-[0-9a-f-]{36,40}$/
const LEGACY_JOB_ID = /^[jk]-[0-9a-f-]{36,40}$/

/**
 * Where a job id lives: its job's name, or `legacy` for an id of the one-queue layout before ADR 0025
 * (those jobs stay in `jobs.queue`); undefined for anything keel never made.
 */
export function jobNameOf(jobId: string): string | { legacy: true } | undefined {
  const m = JOB_ID.exec(jobId)
  if (m !== null) return m[1]
  return LEGACY_JOB_ID.test(jobId) ? { legacy: true } : undefined
}
