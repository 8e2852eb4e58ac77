import { serialize } from 'node:v8'
import { afterAll, beforeEach, describe, expect, it } from 'vitest'
import { L1Store } from '../src/cache/l1-store.js'
import { counterString, decodeEntry, encodeEntry } from '../src/cache/serializer.js'
import { type Keel, KeelError } from '../src/index.js'
import { cacheKeel, freshPrefix, redisClient, sleep } from './support/cache.js'

const open: Keel[] = []
function make(...args: Parameters<typeof cacheKeel>): Keel {
  const k = cacheKeel(...args)
  open.push(k)
  return k
}
afterAll(async () => {
  await Promise.all(open.map((k) => k.close()))
})

let prefix: string
beforeEach(() => {
  prefix = freshPrefix()
})

function counting<T>(value: () => T, delayMs = 0) {
  const loader = async () => {
    loader.calls++
    if (delayMs > 0) await sleep(delayMs)
    return value()
  }
  loader.calls = 0
  return loader
}

const sample = () => ({
  at: new Date('2026-11-27T12:00:00.123Z'),
  big: 2n ** 70n,
  map: new Map<string, unknown>([['a', { nested: new Set([1, 2]) }]]),
  set: new Set(['x', 'y']),
  buf: Buffer.from('keel'),
  nan: Number.NaN,
  nothing: undefined,
  list: [1, 'two', null],
})

describe('cache: tiers and types', () => {
  it('loads once, then serves L1; a second process (instance) gets it from Redis', async () => {
    const a = make({ prefix })
    const b = make({ prefix })
    const loader = counting(sample)
    const first = await a.tenant('acme').cached({ key: 'dash' }, loader)
    const again = await a.tenant('acme').cached({ key: 'dash' }, loader)
    const remote = await b.tenant('acme').cached({ key: 'dash' }, loader)
    expect(loader.calls).toBe(1)
    expect(again).toBe(first) // L1: the same decoded object
    expect(remote).not.toBe(first) // L2: decoded anew
    for (const value of [first, remote]) {
      expect(value).toEqual(sample())
      expect(value.at).toBeInstanceOf(Date)
      expect(typeof value.big).toBe('bigint')
      expect(value.map).toBeInstanceOf(Map)
      expect(value.set).toBeInstanceOf(Set)
      expect(Buffer.isBuffer(value.buf)).toBe(true)
      expect(Number.isNaN(value.nan)).toBe(true)
      expect('nothing' in value).toBe(true)
    }
  })

  it('freezes shared values so no caller can mutate what others read', async () => {
    const a = make({ prefix })
    const value = await a.tenant('acme').cached({ key: 'obj' }, async () => ({ nested: { list: [1, 2] } }))
    expect(Object.isFrozen(value)).toBe(true)
    expect(Object.isFrozen(value.nested.list)).toBe(true)
    expect(() => {
      ;(value.nested.list as number[]).push(3)
    }).toThrow(TypeError)
  })

  it('namespaces keys by tenant: the same key is a different entry per tenant, in both tiers', async () => {
    const a = make({ prefix })
    const b = make({ prefix })
    await a.tenant('acme').cached({ key: 'k' }, async () => 'acme value')
    await a.tenant('globex').cached({ key: 'k' }, async () => 'globex value')
    expect(await b.tenant('acme').cached({ key: 'k' }, async () => 'reloaded')).toBe('acme value')
    expect(await b.tenant('globex').cached({ key: 'k' }, async () => 'reloaded')).toBe('globex value')
    expect(await b.cache.cached({ key: 'k' }, async () => 'shared value')).toBe('shared value')
    const redis = redisClient()
    const keys = await redis.keys(`${prefix}:*`)
    await redis.quit()
    expect(keys.sort()).toEqual([`${prefix}:{g}:v:k`, `${prefix}:{t:acme}:v:k`, `${prefix}:{t:globex}:v:k`])
  })

  it('works with L1 only when no Redis is configured', async () => {
    const local = make({ prefix }, false)
    const loader = counting(() => 42)
    expect(await local.tenant('acme').cached({ key: 'x' }, loader)).toBe(42)
    expect(await local.tenant('acme').cached({ key: 'x' }, loader)).toBe(42)
    expect(loader.calls).toBe(1)
    await local.tenant('acme').invalidate({ keys: ['x'] })
    expect(await local.tenant('acme').cached({ key: 'x' }, loader)).toBe(42)
    expect(loader.calls).toBe(2)
  })
  it('a Redis that stops answering times the read out: the loader serves the call while Redis is still paused', async () => {
    const a = make({ prefix })
    const warm = counting(() => 0)
    await a.tenant('acme').cached({ key: 'warm' }, warm) // connected and ready before the pause
    const admin = redisClient()
    const probe = redisClient()
    await probe.ping()
    // Every client's commands wait 3 s; keel's command timeout in these tests is 200 ms.
    await admin.call('CLIENT', 'PAUSE', '3000', 'ALL')
    let paused = true
    const pausedProbe = probe.ping().then(() => {
      paused = false
    })
    const loader = counting(() => 'from the loader')
    expect(await a.tenant('acme').cached({ key: 'paused' }, loader)).toBe('from the loader')
    expect(loader.calls).toBe(1)
    expect(paused).toBe(true)
    await pausedProbe
    await Promise.all([admin.quit(), probe.quit()])
  })
})

describe('cache: freshness', () => {
  it('reloads after ttlMs', async () => {
    const a = make({ prefix })
    let n = 0
    const loader = async () => ++n
    expect(await a.tenant('acme').cached({ key: 'ttl', ttlMs: 80 }, loader)).toBe(1)
    expect(await a.tenant('acme').cached({ key: 'ttl', ttlMs: 80 }, loader)).toBe(1)
    await sleep(120)
    expect(await a.tenant('acme').cached({ key: 'ttl', ttlMs: 80 }, loader)).toBe(2)
  })

  it('stale-while-revalidate: serves the stale value at once and refreshes once behind it', async () => {
    const a = make({ prefix, earlyRefreshBeta: 0 })
    let n = 0
    const loader = async () => {
      await sleep(50)
      return ++n
    }
    const opts = { key: 'swr', ttlMs: 50, staleMs: 5_000 }
    expect(await a.tenant('acme').cached(opts, loader)).toBe(1)
    await sleep(80)
    const stale = await Promise.all(Array.from({ length: 10 }, () => a.tenant('acme').cached(opts, loader)))
    expect(stale).toEqual(Array(10).fill(1))
    await sleep(120)
    expect(await a.tenant('acme').cached(opts, loader)).toBe(2)
    expect(n).toBe(2)
  })

  it('fail-safe: when the loader fails within the grace period, the last value is served', async () => {
    const a = make({ prefix })
    let fail = false
    const loader = async () => {
      if (fail) throw new Error('database down')
      return 'last good'
    }
    const opts = { key: 'failsafe', ttlMs: 30, graceMs: 5_000 }
    expect(await a.tenant('acme').cached(opts, loader)).toBe('last good')
    await sleep(50)
    fail = true
    expect(await a.tenant('acme').cached(opts, loader)).toBe('last good')
    // Beyond grace (none configured here): the error surfaces.
    await expect(a.tenant('acme').cached({ key: 'nograce', ttlMs: 10 }, loader)).rejects.toThrow(
      'database down',
    )
  })

  it("fail-safe from Redis: a process with nothing in L1 serves Redis's last value, frozen like any other", async () => {
    const writer = make({ prefix })
    const reader = make({ prefix })
    const opts = { key: 'failsafe-remote', ttlMs: 30, graceMs: 60_000 }
    await writer.tenant('acme').cached(opts, async () => ({ rows: [{ n: 1 }] }))
    await sleep(50)
    // Past fresh and stale: Redis still holds it (within grace), and the reader's loader fails.
    const value = (await reader.tenant('acme').cached(opts, async () => {
      throw new Error('database down')
    })) as { rows: Array<{ n: number }> }
    expect(value).toEqual({ rows: [{ n: 1 }] })
    expect(Object.isFrozen(value)).toBe(true)
    expect(Object.isFrozen(value.rows)).toBe(true)
    expect(Object.isFrozen(value.rows[0])).toBe(true)
  })

  it('soft timeout: with a stale value at hand, a slow loader does not hold the caller', async () => {
    const a = make({ prefix })
    let n = 0
    const loader = async () => {
      n++
      if (n > 1) await sleep(400)
      return n
    }
    const opts = { key: 'soft', ttlMs: 20, graceMs: 10_000, softTimeoutMs: 50 }
    expect(await a.tenant('acme').cached(opts, loader)).toBe(1)
    await sleep(40)
    expect(await a.tenant('acme').cached(opts, loader)).toBe(1) // returned after ~50 ms, stale
    await sleep(450)
    expect(await a.tenant('acme').cached(opts, loader)).toBe(2) // the load went on and landed
  })

  it('coalesces concurrent misses in one process into one load', async () => {
    const a = make({ prefix })
    const loader = counting(() => 'v', 50)
    const values = await Promise.all(
      Array.from({ length: 100 }, () => a.tenant('acme').cached({ key: 'herd' }, loader)),
    )
    expect(values).toEqual(Array(100).fill('v'))
    expect(loader.calls).toBe(1)
  })
})

describe('cache: invalidation', () => {
  it('by key and by tag, in this process and the others (pub/sub), across both tiers', async () => {
    const a = make({ prefix })
    const b = make({ prefix })
    let version = 1
    const loader = async () => version
    for (const k of [a, b]) {
      expect(await k.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, loader)).toBe(1)
      expect(await k.tenant('acme').cached({ key: 'one' }, loader)).toBe(1)
    }
    version = 2
    await a.tenant('acme').invalidate({ tags: ['invoices'] })
    expect(await b.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, loader)).toBe(2)
    expect(await b.tenant('acme').cached({ key: 'one' }, loader)).toBe(1) // untagged: untouched
    version = 3
    await b.tenant('acme').invalidate({ keys: ['one'] })
    expect(await a.tenant('acme').cached({ key: 'one' }, loader)).toBe(3)
    // Another tenant's tag of the same name is another tag.
    expect(await a.tenant('globex').cached({ key: 'list', tags: ['invoices'] }, loader)).toBe(3)
  })

  it('an invalidation that lands while a loader runs is not overwritten by that loader (fenced)', async () => {
    const a = make({ prefix })
    const b = make({ prefix })
    let source = 'old'
    const slow = async () => {
      const seen = source
      await sleep(200)
      return seen
    }
    const inFlight = a.tenant('acme').cached({ key: 'fenced', tags: ['t'] }, slow)
    await sleep(50)
    source = 'new'
    await b.tenant('acme').invalidate({ tags: ['t'] })
    // The load that began before the invalidation is not returned and not cached.
    expect(await inFlight).toBe('new')
    expect(await b.tenant('acme').cached({ key: 'fenced', tags: ['t'] }, slow)).toBe('new')
    expect(await a.tenant('acme').cached({ key: 'fenced', tags: ['t'] }, slow)).toBe('new')
  })
})

const one = async (): Promise<number> => 1

describe('cache: bad input', () => {
  it.each<[string, unknown, unknown]>([
    ['no options', undefined, one],
    ['no key', {}, one],
    ['empty key', { key: '' }, one],
    ['key too long', { key: 'x'.repeat(600) }, one],
    ['negative ttl', { key: 'k', ttlMs: -1 }, one],
    ['zero ttl', { key: 'k', ttlMs: 0 }, one],
    ['tags not an array', { key: 'k', tags: 'invoices' }, one],
    ['a tag not a string', { key: 'k', tags: [1] }, one],
    ['no loader', { key: 'k' }, undefined],
  ])('cached() with %s -> KEEL_CACHE_OPTIONS_INVALID', async (_name, options, loader) => {
    const a = make({ prefix }, false)
    await expect(a.tenant('acme').cached(options as never, loader as never)).rejects.toMatchObject({
      code: 'KEEL_CACHE_OPTIONS_INVALID',
    })
  })

  it('invalidate() needs keys or tags', async () => {
    const a = make({ prefix }, false)
    await expect(a.tenant('acme').invalidate({})).rejects.toBeInstanceOf(KeelError)
    await expect(a.cache.invalidate({ keys: [''] })).rejects.toMatchObject({
      code: 'KEEL_CACHE_OPTIONS_INVALID',
    })
  })

  it('bad cache config is KEEL_CONFIG_INVALID naming the field, without the Redis password', () => {
    try {
      cacheKeel({ prefix, redis: { url: 'http://:hunter2@h:6379' } as never })
      expect.unreachable()
    } catch (error) {
      expect(error).toMatchObject({ code: 'KEEL_CONFIG_INVALID' })
      expect((error as Error).message).toContain('cache.redis.url')
      expect((error as Error).message).not.toContain('hunter2')
    }
  })
})

describe('cache serializer', () => {
  class Point {
    x = 1
  }
  const entryOf = (value: unknown, versions: string[] = ['0', '17']) => ({
    value,
    freshUntil: 1_800_000_000_000.5,
    staleUntil: 1_800_000_001_000,
    graceUntil: 1_800_000_002_000,
    loadMs: 12.25,
    versions,
  })

  it.each<[string, unknown, number]>([
    ['plain JSON data', { a: 1, b: 'x', c: [true, null, { d: 2.5 }] }, 3],
    ['a JSON string', 'a string, with unicode: ü €', 3],
    ['a Date', { at: new Date(0) }, 4],
    ['a BigInt', { n: 1n }, 4],
    ['a Map', new Map([[1, 2]]), 4],
    ['undefined in an object', { a: undefined }, 4],
    ['undefined itself', undefined, 4],
    ['-0', { z: -0 }, 4],
    ['NaN', [Number.NaN], 4],
    // biome-ignore lint/suspicious/noSparseArray: a sparse array is the case under test
    ['a sparse array', [1, , 3], 4],
    ['a Buffer', Buffer.from('x'), 4],
  ])('an entry holding %s round-trips exactly (format %i)', (_name, value, format) => {
    const entry = entryOf(value)
    const encoded = encodeEntry(entry)
    expect(encoded[0]).toBe(format)
    expect(decodeEntry(encoded)).toStrictEqual(entry)
  })

  it('keeps the invalidation counters exactly, however many (none, or a key and 32 tags)', () => {
    for (const versions of [[], Array.from({ length: 33 }, (_, i) => String(2 ** 53 + i))]) {
      expect(decodeEntry(encodeEntry(entryOf({ a: 1 }, versions)))).toStrictEqual(entryOf({ a: 1 }, versions))
    }
  })

  it.each<[string, unknown]>([
    ['plain JSON data (format 3)', { rows: [{ a: 1, tags: ['x'] }], nested: { deep: { deeper: [[1]] } } }],
    ['V8 data (format 4)', { at: new Date(0), rows: [{ n: 1n }], set: new Set([{ a: 1 }]) }],
  ])('decoded with freeze, %s comes back deep-frozen; without, untouched', (_name, value) => {
    const encoded = encodeEntry(entryOf(value))
    const frozen = decodeEntry(encoded, true)?.value as Record<string, unknown>
    const plain = decodeEntry(encoded)?.value as Record<string, unknown>
    expect(frozen).toStrictEqual(plain)
    const objects = (v: unknown): object[] => {
      if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v)) return []
      const children = v instanceof Set ? [...v] : Object.values(v)
      return [v, ...children.flatMap(objects)]
    }
    expect(objects(frozen).length).toBeGreaterThan(3)
    for (const o of objects(frozen)) expect(Object.isFrozen(o)).toBe(true)
    for (const o of objects(plain)) expect(Object.isFrozen(o)).toBe(false)
  })

  it('reads counters as the strings they are: digits, long ones, and anything else through UTF-8', () => {
    for (const text of ['0', '17', String(2 ** 53), '1'.repeat(30), 'ü7', '']) {
      const buffer = Buffer.concat([Buffer.from('xx'), Buffer.from(text), Buffer.from('yy')])
      expect(counterString(buffer, 2, buffer.length - 2)).toBe(text)
    }
  })

  it('a class instance takes the V8 format and comes back as a plain object', () => {
    const encoded = encodeEntry(entryOf(new Point()))
    expect(encoded[0]).toBe(4)
    expect(decodeEntry(encoded)).toStrictEqual(entryOf({ x: 1 }))
  })

  it("treats unreadable bytes as a miss, never an error: an older keel's formats, garbage, truncation", () => {
    const legacy = { ...entryOf({ a: 1 }), tags: [] }
    const good = encodeEntry(entryOf({ a: 1 }))
    for (const bad of [
      null,
      undefined,
      Buffer.from([]),
      Buffer.from([9, 1, 2]),
      // keel's first formats: a format byte, then the whole entry as JSON (2) or V8 (1)
      Buffer.concat([Buffer.from([2]), Buffer.from(JSON.stringify(legacy))]),
      Buffer.concat([Buffer.from([1]), serialize(legacy)]),
      Buffer.from('{"value":1}'),
      good.subarray(0, 20),
      good.subarray(0, 40),
      good.subarray(0, good.length - 1),
      Buffer.concat([good.subarray(0, 33), Buffer.from([1, 0xff, 0xff])]),
      Buffer.concat([good.subarray(0, 33), Buffer.from([0])]),
      Buffer.concat([Buffer.from([4]), good.subarray(1, good.length - 2), Buffer.from([0xff, 0x00])]),
    ]) {
      expect(decodeEntry(bad as never)).toBeUndefined()
    }
  })

  it('an unreadable value in Redis is a miss: the loader runs, its value replaces it, both tiers serve it', async () => {
    const redis = redisClient()
    const key = `${prefix}:{t:acme}:v:dash`
    await redis.set(key, Buffer.concat([Buffer.from([2]), Buffer.from('{"value":"old"}')]))
    const a = make({ prefix })
    const loader = counting(() => ({ fresh: true }))
    expect(await a.tenant('acme').cached({ key: 'dash' }, loader)).toEqual({ fresh: true })
    expect(loader.calls).toBe(1)
    const stored = await redis.getBuffer(key)
    expect(stored?.[0]).toBe(3)
    const b = make({ prefix })
    expect(await b.tenant('acme').cached({ key: 'dash' }, loader)).toEqual({ fresh: true })
    expect(loader.calls).toBe(1)
    await redis.quit()
  })
})

describe('cache L1 tag index', () => {
  const entry = (value: unknown) => ({
    value,
    freshUntil: Number.MAX_SAFE_INTEGER,
    staleUntil: Number.MAX_SAFE_INTEGER,
    graceUntil: Number.MAX_SAFE_INTEGER,
    loadMs: 0,
    versions: [],
  })

  it('drops exactly the entries of a tag, after evictions emptied and swept thousands of tag sets', () => {
    const l1 = new L1Store(2, 1 << 20)
    // Each store evicts the oldest entry: its tag's set empties; past 1,024 tags the empty ones are swept.
    for (let i = 0; i < 3_000; i++) l1.set(`k${i}`, entry(i), 10, [`tag${i}`, 'shared'])
    expect(l1.size).toBe(2)
    l1.set('a', entry('a'), 10, ['tag0']) // an evicted entry's tag, reused (its set was kept or swept)
    expect(l1.get('k2999')?.value).toBe(2999)
    l1.deleteTag('tag0')
    expect(l1.get('a')).toBeUndefined()
    expect(l1.get('k2999')?.value).toBe(2999)
    l1.deleteTag('shared')
    expect(l1.get('k2999')).toBeUndefined()
    expect(l1.size).toBe(0)
  })

  it('a tag drops only the entries stored with it now: not a key stored again without it', () => {
    const l1 = new L1Store(10, 1 << 20)
    l1.set('a', entry('a1'), 10, ['t1'])
    l1.set('b', entry('b1'), 10, ['t1', 't2'])
    l1.set('a', entry('a2'), 10, ['t2'])
    l1.deleteTag('t1')
    expect(l1.get('a')?.value).toBe('a2')
    expect(l1.get('b')).toBeUndefined()
    l1.deleteTag('t2')
    expect(l1.get('a')).toBeUndefined()
  })

  it('the tag index keeps no more than about twice its live names, however many entries were evicted', () => {
    const l1 = new L1Store(2, 1 << 20)
    // Evictions leave their names in the index (it is kept lazily); sweeps drop them as it grows.
    for (let i = 0; i < 20_000; i++) l1.set(`k${i}`, entry(i), 10, [`tag${i}`, `group${i % 7}`])
    expect(l1.tagIndexSize).toBeLessThanOrEqual(1_024)
    expect(l1.tagIndexSize).toBeGreaterThanOrEqual(4)
    l1.deleteTag('tag19999')
    expect(l1.get('k19999')).toBeUndefined()
    expect(l1.get('k19998')?.value).toBe(19_998)
  })
})
