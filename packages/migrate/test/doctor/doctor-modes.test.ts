import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { doctor, type Finding, type ResolvedPlacement } from '../../src/index.js'
import { cleanSchema, createDatabase, dropDatabase, run, stackUrls, uniqueSuffix, urlFor } from './fixture.js'

const id = uniqueSuffix()
const role = `doctor_modes_app_${id}`
const schemaDb = `doctor_schemas_${id}`
const acmeDb = `doctor_db_acme_${id}`
const globexDb = `doctor_db_globex_${id}`
const bypass = `doctor_modes_bypass_${id}`
// A role per tenant: each placement logs in as its tenant's own role.
const roleA = `doctor_modes_ta_${id}`
const roleB = `doctor_modes_tb_${id}`
const ownDbA = `doctor_own_a_${id}`
const ownDbB = `doctor_own_b_${id}`

const pairs = (findings: Finding[]) => findings.map((f) => [f.rule, f.object] as const).sort()

/** One tenant schema as the tenant migrations would make it. */
const tenantSchema = (s: string) => `
  CREATE SCHEMA ${s};
  CREATE TABLE ${s}.customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE);
  CREATE TABLE ${s}.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES ${s}.customers (id), total_cents bigint NOT NULL);
  CREATE INDEX orders_customer ON ${s}.orders (customer_id);
  GRANT USAGE ON SCHEMA ${s} TO ${role};
  GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${role};`

beforeAll(async () => {
  await run(
    stackUrls().superUrl,
    `CREATE ROLE ${role} LOGIN PASSWORD 'app'; CREATE ROLE ${bypass} NOLOGIN BYPASSRLS;
     CREATE ROLE ${roleA} LOGIN PASSWORD 'app'; CREATE ROLE ${roleB} LOGIN PASSWORD 'app';`,
  )
  await createDatabase(ownDbA, [roleA])
  // roleA, tenant a's role, was granted CONNECT on tenant b's database too.
  await createDatabase(ownDbB, [roleB, roleA])
  await createDatabase(schemaDb, [role])
  await createDatabase(acmeDb, [role])
  await createDatabase(globexDb, [role])
  const owner = urlFor('keel_owner', 'owner', schemaDb)
  await run(owner, ['tenant_a', 'tenant_b', 'tenant_c', 'tenant_d'].map(tenantSchema).join('\n'))
  // tenant_d missed a migration and got a column by hand.
  await run(owner, 'DROP INDEX tenant_d.orders_customer; ALTER TABLE tenant_d.customers ADD COLUMN note text')
  await run(urlFor('keel_owner', 'owner', acmeDb), cleanSchema(role))
  await run(
    urlFor('keel_owner', 'owner', globexDb),
    `${cleanSchema(role)}
     CREATE TABLE invoices (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));
     GRANT SELECT ON invoices TO ${role};`,
  )
})

afterAll(async () => {
  for (const db of [schemaDb, acmeDb, globexDb, ownDbA, ownDbB]) await dropDatabase(db)
  await run(
    stackUrls().superUrl,
    [role, bypass, roleA, roleB].map((r) => `DROP ROLE IF EXISTS ${r};`).join('\n'),
  )
})

describe('schema mode', () => {
  const options = {
    connection: urlFor('keel_owner', 'owner', schemaDb),
    runtimeRole: role,
    tenancy: { mode: 'schema' as const, schemaFor: (t: string) => `tenant_${t}`, sharedSchemas: [] },
  }

  it('reports the one schema that drifted from the others, with what differs', async () => {
    const result = await doctor({ ...options, tenants: ['a', 'b', 'c', 'd'] })
    expect(pairs(result.findings)).toEqual([['schema-drift', 'tenant_d']])
    const message = result.findings[0]!.message
    expect(message).toContain('missing index orders.orders_customer (customer_id) btree')
    expect(message).toContain('extra customers.note text')
    expect(message).toContain('3 schema(s) like tenant_a')
  })

  it('finds the tenant schemas itself when no fleet is given (every schema but public and shared ones)', async () => {
    const result = await doctor(options)
    expect(pairs(result.findings)).toEqual([['schema-drift', 'tenant_d']])
    expect(result.checked.tenantTables).toBe(8)
  })

  it('schemas migrated alike: nothing to report', async () => {
    const result = await doctor({ ...options, tenants: async () => ['a', 'b', 'c'] })
    expect(result.findings).toEqual([])
  })

  it('reports a schema where PUBLIC may CREATE', async () => {
    const owner = urlFor('keel_owner', 'owner', schemaDb)
    await run(owner, 'GRANT CREATE ON SCHEMA tenant_b TO PUBLIC')
    try {
      const result = await doctor({ ...options, tenants: ['a', 'b', 'c'] })
      expect(pairs(result.findings)).toEqual([['schema-public-create', 'tenant_b']])
    } finally {
      await run(owner, 'REVOKE CREATE ON SCHEMA tenant_b FROM PUBLIC')
    }
  })
})

describe('database mode', () => {
  const placements: Record<string, ResolvedPlacement | null> = {
    acme: { primary: { connectionString: urlFor(role, 'app', acmeDb) } },
    globex: { primary: { connectionString: urlFor(role, 'app', globexDb) }, isolation: 'rls' },
    initech: { primary: { connectionString: urlFor(role, 'app', `doctor_db_missing_${id}`) } },
    ghost: null,
  }
  const options = {
    connection: stackUrls().ownerUrl,
    runtimeRole: role,
    tenancy: { mode: 'database' as const, resolve: async (t: string) => placements[t] ?? null },
    sharedTables: ['plans'],
    tenantColumns: { tenants: 'id' },
  }

  it('checks each tenant database with its isolation, and reports those it cannot reach', async () => {
    const result = await doctor({ ...options, tenants: ['acme', 'globex', 'initech', 'ghost'] })
    expect(pairs(result.findings)).toEqual([
      ['rls-disabled', `${globexDb}/public.invoices`],
      ['tenant-database-unreachable', 'tenant ghost'],
      ['tenant-database-unreachable', 'tenant initech'],
    ])
    expect(result.findings.find((f) => f.object === 'tenant initech')!.message).toContain('3D000')
    expect(result.checked.databases).toBe(2)
    // globex's probe ran as the runtime role through the placement's own connection string.
    expect(result.probe).toEqual({ ran: true })
  })

  it('needs the fleet: without tenants it cannot run', async () => {
    await expect(doctor(options)).rejects.toMatchObject({
      code: 'KEEL_DOCTOR_CONFIG_INVALID',
      details: { fields: ['tenants'] },
    })
  })

  it('a fleet of clean tenant databases: nothing to report', async () => {
    const result = await doctor({ ...options, tenants: ['acme'] })
    expect(result.findings).toEqual([])
  })

  it('a role finding is reported once for the server, not once per tenant database', async () => {
    await run(stackUrls().superUrl, `GRANT ${bypass} TO ${role}`)
    try {
      const result = await doctor({ ...options, tenants: ['acme', 'globex'], probe: false })
      expect(pairs(result.findings)).toEqual([
        ['rls-disabled', `${globexDb}/public.invoices`],
        ['runtime-role-member-of-bypass', role],
      ])
    } finally {
      await run(stackUrls().superUrl, `REVOKE ${bypass} FROM ${role}`)
    }
  })

  it("PUBLIC CONNECT on a tenant database, and a tenant's role reaching another tenant's database", async () => {
    const own = {
      connection: stackUrls().ownerUrl,
      runtimeRole: roleA,
      tenancy: {
        mode: 'database' as const,
        resolve: (t: string) => ({
          primary: {
            connectionString: t === 'a' ? urlFor(roleA, 'app', ownDbA) : urlFor(roleB, 'app', ownDbB),
          },
        }),
      },
      tenants: ['a', 'b'],
    }
    expect(pairs((await doctor(own)).findings)).toEqual([['tenant-database-connect', `${ownDbB}:${roleA}`]])
    await run(stackUrls().superUrl, `GRANT CONNECT ON DATABASE ${ownDbA} TO PUBLIC`)
    try {
      expect(pairs((await doctor(own)).findings)).toEqual([
        ['tenant-database-connect', ownDbA],
        ['tenant-database-connect', `${ownDbB}:${roleA}`],
      ])
    } finally {
      await run(stackUrls().superUrl, `REVOKE CONNECT ON DATABASE ${ownDbA} FROM PUBLIC`)
    }
    // One runtime role for every tenant: it connects everywhere by design, nothing to report.
    const shared = await doctor({ ...options, tenants: ['acme'] })
    expect(shared.findings).toEqual([])
  })
})
