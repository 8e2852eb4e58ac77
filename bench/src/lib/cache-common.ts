import { createKeel, type Keel } from '@keel/core'
import { Redis } from 'ioredis'

/**
 * What every part of the cache bench shares: the value, keel's setup and a raw ioredis client. Kept
 * apart from the peers (cache-peers.ts) so the profiler's child loads keel alone.
 */

/** A small dashboard: a dozen aggregate rows, what `db.cached` typically holds (~1 KB as JSON). */
export interface Dashboard {
  tenant: string
  generatedAt: string
  rows: Array<{ status: string; month: string; invoices: number; amountCents: number; currency: string }>
}

const STATUSES = ['draft', 'open', 'paid', 'overdue', 'void', 'disputed']

export function dashboardValue(): Dashboard {
  return {
    tenant: 't001',
    generatedAt: '2026-11-27T12:00:00.000Z',
    rows: Array.from({ length: 12 }, (_, i) => ({
      status: STATUSES[i % STATUSES.length]!,
      month: `2026-${String(i + 1).padStart(2, '0')}`,
      invoices: 100 + i * 7,
      amountCents: 1_234_500 + i * 10_000,
      currency: 'EUR',
    })),
  }
}

export function isDashboard(value: unknown): boolean {
  const v = value as Dashboard | undefined
  return v?.tenant === 't001' && Array.isArray(v.rows) && v.rows.length === 12
}

export const TTL_MS = 10 * 60_000

// ------------------------------------------------------------------------------------------------ keel

export interface KeelSetup {
  redisUrl: string
  primaryUrl: string
  prefix: string
  l1MaxEntries?: number
  /** keel's `cache.l1.freeze` (default true: values are deep-frozen before they are shared). */
  l1Freeze?: boolean
}

/** keel with its Redis tier; Postgres is configured (required) but the cache bench never queries it. */
export function createKeelCache(setup: KeelSetup): Keel {
  return createKeel({
    postgres: { primary: { connectionString: setup.primaryUrl }, pool: { max: 1 } },
    cache: {
      redis: { url: setup.redisUrl },
      prefix: setup.prefix,
      ttlMs: TTL_MS,
      l1: {
        ...(setup.l1MaxEntries === undefined ? {} : { maxEntries: setup.l1MaxEntries }),
        ...(setup.l1Freeze === undefined ? {} : { freeze: setup.l1Freeze }),
      },
    },
  })
}

// -------------------------------------------------------------------------------------------- ioredis

export function rawRedis(redisUrl: string): Redis {
  const redis = new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1 })
  redis.on('error', () => undefined)
  return redis
}

/**
 * keel's deepFreeze (packages/core/src/cache/cache-entry.ts; keel does not export it), what it applies to
 * a loader's value and to V8-format entries: indexed loops for arrays, Object.keys for objects, primitives
 * skipped before any call. (A JSON entry read from Redis takes freezeParsedLikeKeel's walk instead.)
 */
export function deepFreezeLikeKeel<T>(value: T): T {
  if (typeof value === 'object' && value !== null) freezeObjectLikeKeel(value)
  return value
}

function freezeObjectLikeKeel(value: object): void {
  if (Object.isFrozen(value)) return
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === 'object' && item !== null) freezeObjectLikeKeel(item)
    }
  } else if (ArrayBuffer.isView(value)) {
    return
  } else if (value instanceof Map) {
    for (const [k, v] of value) {
      if (typeof k === 'object' && k !== null) freezeObjectLikeKeel(k)
      if (typeof v === 'object' && v !== null) freezeObjectLikeKeel(v)
    }
  } else if (value instanceof Set) {
    for (const v of value) if (typeof v === 'object' && v !== null) freezeObjectLikeKeel(v)
  } else {
    const record = value as Record<string, unknown>
    for (const key of Object.keys(record)) {
      const item = record[key]
      if (typeof item === 'object' && item !== null) freezeObjectLikeKeel(item)
    }
  }
  Object.freeze(value)
}

/**
 * keel's freeze of a value it just decoded from JSON (freezeParsed in packages/core/src/cache/cache-entry.ts,
 * since issue #11): a tree of plain objects and arrays, walked with for-in, no isFrozen / Map / Set checks.
 */
export function freezeParsedLikeKeel<T>(value: T): T {
  if (typeof value === 'object' && value !== null) freezeParsedObjectLikeKeel(value)
  return value
}

function freezeParsedObjectLikeKeel(value: object): void {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === 'object' && item !== null) freezeParsedObjectLikeKeel(item)
    }
  } else {
    const record = value as Record<string, unknown>
    for (const key in record) {
      const item = record[key]
      if (typeof item === 'object' && item !== null) freezeParsedObjectLikeKeel(item)
    }
  }
  Object.freeze(value)
}

/**
 * keel's Redis entry layout (packages/core/src/cache/serializer.ts, ADR 0018; keel does not export it),
 * for a plain JSON value: format byte 3, freshUntil / staleUntil / graceUntil / loadMs as float64 LE, the
 * number of invalidation counters, each as a uint16 LE length and its digits, then the value's JSON.
 */
export function entryLikeKeel(value: unknown, until: number, versions: readonly string[]): Buffer {
  const header = Buffer.alloc(34)
  header[0] = 3
  for (let i = 0; i < 3; i++) header.writeDoubleLE(until, 1 + i * 8)
  header.writeDoubleLE(1, 25)
  header[33] = versions.length
  const counters = versions.map((v) => {
    const digits = Buffer.from(v)
    const length = Buffer.alloc(2)
    length.writeUInt16LE(digits.length)
    return Buffer.concat([length, digits])
  })
  return Buffer.concat([header, ...counters, Buffer.from(JSON.stringify(value))])
}

/** keel's counterString (serializer.ts): a counter's ASCII digits as a string, built in JS. */
export function counterStringLikeKeel(buffer: Buffer, start: number, end: number): string {
  if (end - start > 20) return buffer.toString('utf8', start, end)
  let out = ''
  for (let i = start; i < end; i++) {
    const byte = buffer[i]!
    if (byte >= 0x80) return buffer.toString('utf8', start, end)
    out += String.fromCharCode(byte)
  }
  return out
}

/** The decode keel runs on a Redis hit: the header's reads, the counters' strings, one JSON.parse. */
export function decodeEntryLikeKeel(buffer: Buffer): {
  value: unknown
  freshUntil: number
  versions: string[]
} {
  const n = buffer[33]!
  const versions: string[] = new Array(n)
  let at = 34
  for (let i = 0; i < n; i++) {
    const length = buffer.readUInt16LE(at)
    at += 2
    versions[i] = counterStringLikeKeel(buffer, at, at + length)
    at += length
  }
  return { value: JSON.parse(buffer.toString('utf8', at)), freshUntil: buffer.readDoubleLE(1), versions }
}
