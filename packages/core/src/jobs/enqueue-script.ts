import { addDelayedJob, addPrioritizedJob } from './bullmq-internals.js'
import { positionLua } from './lua/scripts.js'

/**
 * keel's enqueue in one round trip (ADR 0019): BullMQ's own add scripts, as the installed BullMQ ships
 * them (includes already inlined), with keel's fair position spliced in. The job is stored exactly as
 * `Queue.add` would store it; only the priority gets the tenant's position added, inside the same
 * script. bullmq is a peer within a closed range of tested minors (ADR 0028); outside it, or when the
 * script text does not splice, keel falls back to two round trips, and test/bullmq-internals.test.ts and
 * test/jobs-enqueue-script.test.ts fail when its script text or key layout changes.
 */

/** A BullMQ script as it ships in `bullmq/dist/<format>/scripts/<name>-<keys>.js`. */
export interface ShippedScript {
  readonly name: string
  readonly content: string
  readonly keys: number
}

/** The BullMQ queue keys each add script takes, in order (from the `KEYS[n]` header of its source). */
export const PRIORITIZED_KEYS = [
  'marker',
  'meta',
  'id',
  'prioritized',
  'delayed',
  'completed',
  'active',
  'events',
  'pc',
] as const
export const DELAYED_KEYS = ['marker', 'meta', 'id', 'delayed', 'completed', 'events'] as const

/** Where keel's block goes: after BullMQ's duplicate-id check, before the job is stored. */
export const POSITION_MARKER = 'local delay, priority = storeJob('
/**
 * BullMQ's job counter, which only numbers jobs added without an id. keel always gives an id, so its
 * script counts only when none is given, as BullMQ uses the count: one Redis command less per enqueue.
 */
export const COUNTER_LINE = 'local jobCounter = rcall("INCR", idKey)'
const COUNTER_WHEN_NEEDED = 'local jobCounter = args[2] == "" and rcall("INCR", idKey) or 0'

/**
 * BullMQ's add script with keel's position block, spliced in after BullMQ's own duplicate-id check (a job
 * id that exists returns at once, without a position: idempotency keys, ADR 0014) and before the job is
 * stored, where it adds the tenant's position to the band's offset the client passed as `priority`; and
 * BullMQ's job counter advances only for a job without an id (see {@link COUNTER_LINE}).
 * Keys: the script's own, then the tenant's fair hash. ARGV: the script's own three, then the position cap
 * and the fair hash's TTL (ms). Returns the job id (also for a duplicate) or BullMQ's negative error code.
 */
export function spliceEnqueueScript(script: ShippedScript): string {
  for (const marker of [POSITION_MARKER, COUNTER_LINE]) {
    if (script.content.split(marker).length !== 2) {
      throw new Error(
        `BullMQ's ${script.name} script changed: ${JSON.stringify(marker)} is not in it exactly once`,
      )
    }
  }
  const position = `
do${positionLua(`KEYS[${script.keys + 1}]`, 'ARGV[4]', 'ARGV[5]')}
  opts['priority'] = (opts['priority'] or 0) + p
  opts['jobId'] = jobId
end
`
  return script.content
    .replace(COUNTER_LINE, COUNTER_WHEN_NEEDED)
    .replace(POSITION_MARKER, `${position}${POSITION_MARKER}`)
}

export interface EnqueueScripts {
  /** Ready to run now: the job goes to the prioritized set. */
  readonly prioritized: { lua: string; keys: number }
  /** With a delay: the job goes to the delayed set, then to the prioritized set with its priority. */
  readonly delayed: { lua: string; keys: number }
}

/** keel's two enqueue scripts from the installed BullMQ; throws when its scripts are not the ones keel knows. */
export function buildEnqueueScripts(
  prioritized: ShippedScript = addPrioritizedJob,
  delayed: ShippedScript = addDelayedJob,
): EnqueueScripts {
  if (prioritized.keys !== PRIORITIZED_KEYS.length || delayed.keys !== DELAYED_KEYS.length) {
    throw new Error(
      `BullMQ's add scripts changed their keys (${prioritized.keys} and ${delayed.keys}, keel knows ${PRIORITIZED_KEYS.length} and ${DELAYED_KEYS.length})`,
    )
  }
  return {
    prioritized: { lua: spliceEnqueueScript(prioritized), keys: prioritized.keys },
    delayed: { lua: spliceEnqueueScript(delayed), keys: delayed.keys },
  }
}
