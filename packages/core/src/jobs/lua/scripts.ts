/// <reference path="./lua-text.d.ts" />
import fairDone from './fair-done.lua'
import fairPosition from './fair-position.lua'
import fairPriority from './fair-priority.lua'
import slotAcquire from './slot-acquire.lua'

/** Where fair-priority.lua takes the position block. */
const POSITION_SLOT = '--[[keel:fair-position]]'

/**
 * The position block (fair-position.lua) with its locals bound: the tenant's fair hash key, the
 * position cap and the hash's TTL, as Lua expressions (`KEYS[n]`, `ARGV[n]`). Sets the local `p`.
 */
export function positionLua(fairKey: string, max: string, ttl: string): string {
  return `\nlocal keelFair, keelMax, keelTtl = ${fairKey}, ${max}, ${ttl}\n${fairPosition}`
}

function include(script: string, slot: string, block: string): string {
  if (script.split(slot).length !== 2)
    throw new Error(`keel's Lua: ${slot} is not in the script exactly once`)
  return script.replace(slot, block)
}

/** The fallback's position (and claim) script; see fair-priority.lua. */
export const FAIR_PRIORITY = include(fairPriority, POSITION_SLOT, fairPosition)
/** A tenant's job done for good; see fair-done.lua. */
export const FAIR_DONE = fairDone
/** A tenant's running slot; see slot-acquire.lua. */
export const SLOT_ACQUIRE = slotAcquire
