import { applyJobOutbox, applyRlsPolicy } from '@keel/core'
import pg from 'pg'

/** The example's tenant setting: keel sets it on every statement, the policies read it. */
export const TENANT_SETTING = 'app.tenant_id'

/**
 * Creates the example's schema as the owner role (the app itself connects as keel_app: not the owner,
 * no BYPASSRLS). Drops the example's tables first, so a demo run always starts from the same state.
 */
export async function migrate(ownerUrl: string, appRole = 'keel_app'): Promise<void> {
  const owner = new pg.Client({ connectionString: ownerUrl })
  await owner.connect()
  try {
    // The outbox is keel's own table (applyJobOutbox below is idempotent): only the example's are reset.
    await owner.query('DROP TABLE IF EXISTS invoices, tenants CASCADE')
    await owner.query(`
      CREATE TABLE tenants (
        id         text PRIMARY KEY,
        name       text NOT NULL,
        plan       text NOT NULL CHECK (plan IN ('free', 'team', 'enterprise')),
        created_at timestamptz NOT NULL DEFAULT now()
      )`)
    await owner.query(`
      CREATE TABLE invoices (
        tenant_id    text NOT NULL REFERENCES tenants (id),
        id           bigint GENERATED ALWAYS AS IDENTITY,
        number       text NOT NULL,
        customer     text NOT NULL,
        amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
        status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'void')),
        issued_on    date NOT NULL DEFAULT current_date,
        created_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, id),
        UNIQUE (tenant_id, number)
      )`)
    // The list route pages newest first within a tenant; the policy's predicate pins tenant_id.
    await owner.query('CREATE INDEX invoices_newest ON invoices (tenant_id, created_at DESC, id DESC)')
    await applyRlsPolicy(owner, { table: 'tenants', column: 'id', setting: TENANT_SETTING })
    await applyRlsPolicy(owner, { table: 'invoices', setting: TENANT_SETTING })
    await applyJobOutbox(owner, { role: appRole, setting: TENANT_SETTING })
  } finally {
    await owner.end()
  }
}
