import { afterAll, describe, expect, it } from 'vitest'
import { tenantScope } from '../src/cache/cache-client.js'
import { CacheKeys } from '../src/cache/cache-keys.js'
import { freshPrefix } from './support/cache.js'
import { connect } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'

// What a custom idPattern lets through must never make two tenants one (ADR 0026).

/** Redis Cluster's hash tag: the text between the first `{` and the first `}` after it. */
function hashTag(key: string): string {
  const open = key.indexOf('{')
  const close = key.indexOf('}', open + 1)
  return open >= 0 && close > open + 1 ? key.slice(open + 1, close) : key
}

// A seeded generator: the same cases on every run, so a failure can be replayed.
function random(seed: number): () => number {
  // mulberry32
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

const ALPHABET = ['a', 'v', 'x', '}', '{', ':', '%', '7', 'D', '%7D', 'é', '日', '😀', ':v:', '}:v:', 'kv']

function word(next: () => number, min: number): string {
  const length = min + Math.floor(next() * 7)
  let s = ''
  for (let i = 0; i < length; i++) s += ALPHABET[Math.floor(next() * ALPHABET.length)]
  return s
}

describe('cache keys', () => {
  it('distinct (tenant, key) pairs never build the same Redis key, and a tenant keeps one hash tag', () => {
    const keys = new CacheKeys('keel')
    const kinds = [keys.value, keys.keyVersion, keys.tagVersion, keys.lock].map((f) => f.bind(keys))
    const next = random(42)
    const pairs: Array<[string, string]> = [
      // The collision of issue #10: tenant `a}:v:x` with key `y` against tenant `a` with key `x}:v:y`.
      ['a}:v:x', 'y'],
      ['a', 'x}:v:y'],
      ['a%7D', 'y'],
      ['a}', 'y'],
    ]
    for (let i = 0; i < 4_000; i++) pairs.push([word(next, 1), word(next, 0)])
    const owners = new Map<string, string>()
    const tags = new Map<string, string>()
    for (const [tenant, key] of pairs) {
      const scope = tenantScope(tenant)
      for (const [kind, build] of kinds.entries()) {
        const redisKey = build(scope, key)
        const owner = JSON.stringify([tenant, key, kind])
        expect(owners.get(redisKey) ?? owner).toBe(owner)
        owners.set(redisKey, owner)
        // Every key of one tenant lives in one slot, and no other tenant has that tag.
        const tag = hashTag(redisKey)
        expect(tag).toBe(scope)
        expect(tags.get(tag) ?? tenant).toBe(tenant)
        tags.set(tag, tenant)
      }
    }
    // One Redis key per distinct (tenant, key, kind): nothing was merged.
    const distinct = new Set(pairs.map((p) => JSON.stringify(p)))
    expect(distinct.size).toBeGreaterThan(2_500)
    expect(owners.size).toBe(distinct.size * kinds.length)
  })

  it('tenants whose keys collided before do not see each other’s cached value in Redis', async () => {
    const cache = { redis: { url: readStack().redis.url }, prefix: freshPrefix() }
    const tenants = { idPattern: /^[a-z:{}]+$/ }
    // Two processes: the second has no L1 entry, so it reads Redis.
    const [one, two] = [testKeel({ tenants, cache }), testKeel({ tenants, cache })]
    try {
      const a = await one.tenant('a}:v:x').cached({ key: 'y' }, async () => 'value of a}:v:x')
      const b = await two.tenant('a').cached({ key: 'x}:v:y' }, async () => 'value of a')
      expect([a, b]).toEqual(['value of a}:v:x', 'value of a'])
    } finally {
      await Promise.all([one.close(), two.close()])
    }
  })
})

describe('schema names', () => {
  // 31 two-byte letters and an x: 63 bytes, where Postgres cuts; the ids differ only after that.
  const shared = `${'é'.repeat(31)}x`
  const [idA, idB] = [`${shared}a`, `${shared}b`]
  const owned: string[] = []
  afterAll(async () => {
    const owner = await connect('owner')
    for (const schema of owned) await owner.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await owner.end()
  })

  it('two long unicode ids sharing their first 63 bytes are refused, never mapped onto one schema', async () => {
    // Tenant A provisioned by a migration tool that let Postgres truncate its name.
    const owner = await connect('owner')
    try {
      await owner.query(`DROP SCHEMA IF EXISTS "${shared}" CASCADE`)
      await owner.query(`CREATE SCHEMA "${idA}"`)
      owned.push(shared)
      await owner.query(`GRANT USAGE ON SCHEMA "${idA}" TO keel_app`)
      await owner.query(`CREATE TABLE "${idA}".notes (body text NOT NULL)`)
      await owner.query(`GRANT SELECT ON "${idA}".notes TO keel_app`)
      await owner.query(`INSERT INTO "${idA}".notes VALUES ('note of A')`)
    } finally {
      await owner.end()
    }
    const keel = testKeel({
      tenants: { idPattern: /^[\p{L}a-z]+$/u },
      tenancy: { mode: 'schema', schemaFor: (id: string) => id },
    })
    const prefixed = testKeel({
      tenancy: { mode: 'schema', schemaFor: (id: string) => `${shared}${id}` },
    })
    try {
      for (const id of [idA, idB]) {
        expect(idA.length).toBeLessThan(63)
        const outcome = await Promise.resolve()
          .then(() => keel.tenant(id).query<{ body: string }>('SELECT body FROM notes'))
          .then(
            (r) => r.rows,
            (error: { code?: string }) => error.code,
          )
        expect(outcome).toBe('KEEL_TENANT_INVALID')
      }
      // Short ids, long schema names: refused as well, before any SQL.
      for (const id of ['a', 'b']) {
        const outcome = await Promise.resolve()
          .then(() => prefixed.tenant(id).query<{ body: string }>('SELECT body FROM notes'))
          .then(
            (r) => r.rows,
            (error: { code?: string }) => error.code,
          )
        expect(outcome).toBe('KEEL_TENANT_INVALID')
      }
    } finally {
      await Promise.all([keel.close(), prefixed.close()])
    }
  })
})
