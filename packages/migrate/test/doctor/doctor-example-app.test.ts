import { afterAll, beforeAll, describe, expect, it } from 'vitest'
// The example app's own migration (examples/src/app/migrate.ts): the schema users copy must stay clean.
import { migrate } from '../../../../examples/src/app/migrate.js'
import { doctor } from '../../src/index.js'
import { createDatabase, dropDatabase, run, stackUrls, uniqueSuffix, urlFor } from './fixture.js'

const id = uniqueSuffix()
const db = `doctor_example_${id}`
const role = `doctor_example_app_${id}`

beforeAll(async () => {
  await run(stackUrls().superUrl, `CREATE ROLE ${role} LOGIN PASSWORD 'app'`)
  await createDatabase(db, [role])
  // The grants scripts/stack.mjs gives keel_app on the example's database (README: runtime role set-up).
  await run(
    urlFor('keel_owner', 'owner', db),
    `ALTER DEFAULT PRIVILEGES FOR ROLE keel_owner IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${role};
     ALTER DEFAULT PRIVILEGES FOR ROLE keel_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ${role};`,
  )
  await migrate(urlFor('keel_owner', 'owner', db), role)
  await run(
    urlFor('keel_owner', 'owner', db),
    `ALTER TABLE tenants DISABLE ROW LEVEL SECURITY; ALTER TABLE invoices DISABLE ROW LEVEL SECURITY;
     INSERT INTO tenants VALUES ('acme', 'Acme', 'team'), ('globex', 'Globex', 'free');
     INSERT INTO invoices (tenant_id, number, customer, amount_cents) VALUES ('acme', 'A-1', 'c', 100), ('globex', 'G-1', 'c', 200);
     ALTER TABLE tenants ENABLE ROW LEVEL SECURITY; ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;`,
  )
})

afterAll(async () => {
  await dropDatabase(db)
  await run(stackUrls().superUrl, `DROP ROLE IF EXISTS ${role}`)
})

describe("the example app's database", () => {
  it('is clean, outbox included, and the probe ran on every tenant table', async () => {
    const result = await doctor({
      connection: urlFor('keel_owner', 'owner', db),
      runtimeRole: role,
      runtimeConnection: urlFor(role, 'app', db),
      tenancy: { mode: 'rls', setting: 'app.tenant_id' },
      tenantColumns: { tenants: 'id' },
    })
    expect(result.findings).toEqual([])
    expect(result.probe).toEqual({ ran: true })
    expect(result.checked).toMatchObject({ tenantTables: 3, probedTables: 3 })
  })
})
