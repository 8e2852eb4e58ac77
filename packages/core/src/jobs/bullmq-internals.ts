/// <reference path="./bullmq-scripts.d.ts" />
import * as shippedScripts from 'bullmq/dist/cjs/scripts/index.js'

/**
 * Everything keel uses of BullMQ beyond `Queue`/`Worker`/`Job`, in one place (ADR 0028):
 * - its add scripts (Lua), as BullMQ ships them in `dist/cjs/scripts`, which keel splices its fair
 *   position into (enqueue-script.ts, ADR 0019), looked up by name so a renamed file (the `-9` suffix
 *   is the key count) is a mismatch keel reports, not a module it cannot load;
 * - its Redis key layout (`QueueKeys`), which those scripts take in the order of their headers;
 * - its argument packing (msgpackr's `Packr` with BullMQ's options), which the scripts unpack.
 * The supported BullMQ range is the peer range in package.json; test/bullmq-internals.test.ts checks every
 * shape against the installed BullMQ and fails loudly when a release changes one, and a script keel does
 * not recognise at run time makes enqueue fall back to `Queue.add` (two round trips) with a warning.
 */

/** A BullMQ script as it ships in `bullmq/dist/<format>/scripts/<name>-<keys>.js`. */
interface Shipped {
  readonly name: string
  readonly content: string
  readonly keys: number
}

const scripts = shippedScripts as unknown as Readonly<Record<string, Shipped | undefined>>

/** BullMQ's script that adds a job ready to run with a priority (undefined if this BullMQ has none). */
export const addPrioritizedJob = scripts.addPrioritizedJob as Shipped
/** BullMQ's script that adds a delayed job. */
export const addDelayedJob = scripts.addDelayedJob as Shipped

/** BullMQ's Redis keys of a queue (`bull:<queue>:<type>`), public but not documented as stable. */
export { QueueKeys } from 'bullmq'

/**
 * msgpackr, as BullMQ packs script arguments: `new Packr(BULLMQ_PACKR_OPTIONS)`. keel depends on
 * msgpackr itself (BullMQ does not export its packer); the format of these options is msgpackr's wire
 * format, stable across msgpackr 2.x.
 */
export { Packr } from 'msgpackr'
export const BULLMQ_PACKR_OPTIONS = { useRecords: false, encodeUndefinedAsNil: true } as const
