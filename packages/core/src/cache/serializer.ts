import { deserialize, serialize } from 'node:v8'
import { type CacheEntry, deepFreeze, freezeParsed } from './cache-entry.js'

/**
 * An entry crosses the Redis tier as one buffer: a format byte, the entry's bookkeeping in a small
 * binary header, then the value's bytes (ADR 0018):
 *
 *   [0]       format: 3 = the value is JSON, 4 = the value is V8 structured-clone bytes
 *   [1, 33)   freshUntil, staleUntil, graceUntil, loadMs: float64, little-endian
 *   [33]      n: how many invalidation counters follow ([key, ...tags], at most 1 + 32)
 *   then n x  (uint16 LE byte length, the counter's digits)
 *   then      the value, to the end of the buffer
 *
 * So a hit decodes the header with a few reads and the value with one JSON.parse (or one V8
 * deserialize), with no wrapper object parsed around it. The value is JSON when it is plain JSON data
 * (objects, arrays, strings, finite numbers, booleans, null): JSON.parse decodes it about twice as fast
 * as V8's deserializer. Otherwise it is V8's format, so Date, BigInt, Map, Set, Buffer and typed arrays,
 * RegExp, NaN, -0, undefined and sparse arrays come back as they went in. Which one is decided when the
 * value is written (a miss), never on a hit. Anything unreadable (an older keel's format 1 or 2, another
 * format, a truncated or corrupted value) decodes to undefined: a miss, never an error.
 */
const FORMAT_JSON = 3
const FORMAT_V8 = 4
const COUNTERS_AT = 33
const MAX_COUNTERS = 255

/** The encoding of one value alone, for the L1 byte budget of entries that never went to Redis. */
export function encodedSize(value: unknown): number {
  return isJsonData(value) ? Buffer.byteLength(JSON.stringify(value)) : serialize(value).length
}

export function encodeEntry(entry: CacheEntry): Buffer {
  const { versions } = entry
  if (versions.length > MAX_COUNTERS) throw new Error('keel cache: too many invalidation counters')
  const json = isJsonData(entry.value)
  const body = json ? Buffer.from(JSON.stringify(entry.value)) : serialize(entry.value)
  let size = COUNTERS_AT + 1 + body.length
  for (const v of versions) size += 2 + Buffer.byteLength(v)
  const out = Buffer.allocUnsafe(size)
  out[0] = json ? FORMAT_JSON : FORMAT_V8
  out.writeDoubleLE(entry.freshUntil, 1)
  out.writeDoubleLE(entry.staleUntil, 9)
  out.writeDoubleLE(entry.graceUntil, 17)
  out.writeDoubleLE(entry.loadMs, 25)
  out[COUNTERS_AT] = versions.length
  let at = COUNTERS_AT + 1
  for (const v of versions) {
    const n = out.write(v, at + 2)
    out.writeUInt16LE(n, at)
    at += 2 + n
  }
  body.copy(out, at)
  return out
}

/**
 * The entry in `buffer`, or undefined when it is absent or unreadable. With `freeze`, its value comes
 * back deep-frozen: it was decoded just now and nobody else holds it, so it is frozen in place, and a
 * JSON value (a fresh tree of plain objects and arrays) with the cheaper walk.
 */
export function decodeEntry(buffer: Buffer | null | undefined, freeze = false): CacheEntry | undefined {
  if (buffer === null || buffer === undefined || buffer.length <= COUNTERS_AT) return undefined
  const format = buffer[0]
  if (format !== FORMAT_JSON && format !== FORMAT_V8) return undefined
  try {
    const n = buffer[COUNTERS_AT]!
    const versions: string[] = new Array(n)
    let at = COUNTERS_AT + 1
    for (let i = 0; i < n; i++) {
      const length = buffer.readUInt16LE(at)
      at += 2
      if (at + length > buffer.length) return undefined
      versions[i] = counterString(buffer, at, at + length)
      at += length
    }
    if (at >= buffer.length) return undefined
    let value: unknown
    if (format === FORMAT_JSON) {
      value = JSON.parse(buffer.toString('utf8', at))
      if (freeze) freezeParsed(value)
    } else {
      value = deserialize(buffer.subarray(at))
      if (freeze) deepFreeze(value)
    }
    return {
      value,
      freshUntil: buffer.readDoubleLE(1),
      staleUntil: buffer.readDoubleLE(9),
      graceUntil: buffer.readDoubleLE(17),
      loadMs: buffer.readDoubleLE(25),
      versions,
    }
  } catch {
    // Unreadable (truncated, corrupted, a V8 format this Node does not know): a miss.
    return undefined
  }
}

/**
 * An invalidation counter's digits as a string. Counters are short ASCII (what INCR returns), and a
 * Redis hit reads four of them (two in the reply, two in the entry's header): built in JS, a short
 * string costs a tenth of `toString`'s call into C++ (ADR 0027). Anything else takes `toString`.
 */
export function counterString(buffer: Buffer, start: number, end: number): string {
  if (end - start > 20) return buffer.toString('utf8', start, end)
  let out = ''
  for (let i = start; i < end; i++) {
    const byte = buffer[i]!
    if (byte >= 0x80) return buffer.toString('utf8', start, end)
    out += String.fromCharCode(byte)
  }
  return out
}

/** True when JSON round-trips the value exactly (so the faster format loses nothing). */
function isJsonData(value: unknown): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0)
    case 'object': {
      if (value === null) return true
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          if (!(i in value) || !isJsonData(value[i])) return false
        }
        return true
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return false
      for (const key in value) {
        if (!isJsonData((value as Record<string, unknown>)[key])) return false
      }
      return Object.getOwnPropertySymbols(value).length === 0
    }
    default:
      return false
  }
}
