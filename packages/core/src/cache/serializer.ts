import { deserialize, serialize } from 'node:v8'

/**
 * Values cross the Redis tier through V8's structured-clone serializer: Date, BigInt, Map, Set, Buffer
 * and typed arrays, RegExp, NaN, -0, undefined and sparse arrays come back as they went in, which JSON
 * cannot do (bentocache and cache-manager hand Dates back as strings). It runs in C++ and needs no
 * schema. A leading format byte lets a later keel change the format; anything unreadable (another
 * format, a corrupted value) is treated as a miss, never as an error.
 */
const FORMAT_V1 = 1

export function encode(value: unknown): Buffer {
  const body = serialize(value)
  const out = Buffer.allocUnsafe(body.length + 1)
  out[0] = FORMAT_V1
  body.copy(out, 1)
  return out
}

export function decode(buffer: Buffer | null | undefined): { ok: true; value: unknown } | { ok: false } {
  if (buffer === null || buffer === undefined || buffer.length < 2 || buffer[0] !== FORMAT_V1)
    return { ok: false }
  try {
    return { ok: true, value: deserialize(buffer.subarray(1)) }
  } catch {
    return { ok: false }
  }
}
