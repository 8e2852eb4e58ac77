import { asc } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/node-postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drizzleFixture, invoices } from '../src/orms/drizzle.js'
import { ormSuite } from '../src/suite/orm-suite.js'
import { ormKeel } from '../src/support/keel.js'
import { createOrmTables } from '../src/support/schema.js'

ormSuite(drizzleFixture)

describe('Drizzle on db.pgPool(): one tenant, no keel.run needed', () => {
  const keel = ormKeel()
  beforeAll(() => createOrmTables())
  afterAll(() => keel.close())

  it("sees that tenant's rows only, joins included", async () => {
    const acme = drizzle({ client: keel.tenant('acme').pgPool() })
    const globex = drizzle({ client: keel.tenant('globex').pgPool() })
    const [a, g] = await Promise.all([
      acme.select({ tenantId: invoices.tenantId }).from(invoices).orderBy(asc(invoices.id)),
      globex.select({ tenantId: invoices.tenantId }).from(invoices).orderBy(asc(invoices.id)),
    ])
    expect(a).toEqual([{ tenantId: 'acme' }, { tenantId: 'acme' }, { tenantId: 'acme' }])
    expect(g).toEqual([{ tenantId: 'globex' }, { tenantId: 'globex' }, { tenantId: 'globex' }])
    const joined = await (await drizzleFixture.open(keel.tenant('acme').pgPool(), (fn) => fn())).join()
    expect(joined).toHaveLength(6)
  })
})
