import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Keel } from '../src/index.js'
import { connect } from './support/db.js'
import { testKeel } from './support/keel.js'

// Mixed case and a dash: the schema name must be quoted everywhere keel uses it.
const schemas = { acme: 'Tenant-acme', globex: 'Tenant-globex' }
let keel: Keel

beforeAll(async () => {
  const owner = await connect('owner')
  try {
    for (const [id, schema] of Object.entries(schemas)) {
      await owner.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await owner.query(`CREATE SCHEMA "${schema}"`)
      await owner.query(`GRANT USAGE ON SCHEMA "${schema}" TO keel_app`)
      await owner.query(`CREATE TABLE "${schema}".notes (id serial PRIMARY KEY, body text NOT NULL)`)
      await owner.query(
        `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "${schema}" TO keel_app`,
      )
      await owner.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA "${schema}" TO keel_app`)
      await owner.query(`INSERT INTO "${schema}".notes (body) VALUES ($1)`, [`note of ${id}`])
    }
  } finally {
    await owner.end()
  }
  keel = testKeel({
    pool: { max: 1 },
    tenancy: { mode: 'schema', schemaFor: (id: string) => `Tenant-${id}` },
  })
})

afterAll(async () => {
  await keel.close()
  const owner = await connect('owner')
  for (const schema of Object.values(schemas)) await owner.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await owner.end()
})

describe('schema mode', () => {
  it("sets search_path to the tenant's schema per statement, on a shared connection", async () => {
    // pool max 1: both tenants use the same backend, alternating.
    for (let i = 0; i < 5; i++) {
      const a = await keel.tenant('acme').query<{ body: string }>('SELECT body FROM notes')
      const g = await keel.tenant('globex').query<{ body: string }>('SELECT body FROM notes')
      expect(a.rows).toEqual([{ body: 'note of acme' }])
      expect(g.rows).toEqual([{ body: 'note of globex' }])
    }
    const path = await keel
      .tenant('acme')
      .query<{ p: string }>('SELECT current_setting($1) AS p', ['search_path'])
    expect(path.rows[0]?.p).toBe('"Tenant-acme"')
  })

  it('writes land in the tenant schema, also in transactions', async () => {
    await keel.tenant('acme').transaction(async (tx) => {
      await tx.query('INSERT INTO notes (body) VALUES ($1)', ['second'])
    })
    const owner = await connect('owner')
    try {
      const a = await owner.query(`SELECT body FROM "Tenant-acme".notes ORDER BY id`)
      const g = await owner.query(`SELECT body FROM "Tenant-globex".notes ORDER BY id`)
      expect(a.rows.map((r) => r.body)).toEqual(['note of acme', 'second'])
      expect(g.rows.map((r) => r.body)).toEqual(['note of globex'])
    } finally {
      await owner.end()
    }
  })

  it('an unknown schema is KEEL_TENANT_SCHEMA_UNKNOWN, and nothing runs against the default path', async () => {
    await expect(keel.tenant('initech').query('SELECT 1')).rejects.toMatchObject({
      code: 'KEEL_TENANT_SCHEMA_UNKNOWN',
      details: { tenantId: 'initech', schema: 'Tenant-initech' },
    })
    await expect(keel.tenant('initech').transaction((tx) => tx.query('SELECT 1'))).rejects.toMatchObject({
      code: 'KEEL_TENANT_SCHEMA_UNKNOWN',
    })
    // The connection survives and is clean for the next tenant.
    const a = await keel.tenant('acme').query<{ body: string }>('SELECT body FROM notes ORDER BY id LIMIT 1')
    expect(a.rows[0]?.body).toBe('note of acme')
  })
})
