import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'

const root = join(dirname(fileURLToPath(import.meta.url)), '../../../..')

export interface StackUrls {
  host: string
  port: number
  superUrl: string
  ownerUrl: string
}

export function stackUrls(): StackUrls {
  const stack = JSON.parse(readFileSync(join(root, '.keel/stack.json'), 'utf8')) as {
    primary: { host: string; port: number; superUrl: string; ownerUrl: string }
  }
  return stack.primary
}

/** `postgres://user:pass@host:port/db` on the stack's primary. */
export function urlFor(user: string, password: string | null, database: string): string {
  const { host, port } = stackUrls()
  return `postgres://${user}${password === null ? '' : `:${password}`}@${host}:${port}/${database}`
}

export async function run(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

export const uniqueSuffix = (): string => randomBytes(3).toString('hex')

/** A database owned by keel_owner with public owned by it too, as scripts/stack.mjs sets up `keel`. */
export async function createDatabase(name: string, runtimeRoles: readonly string[]): Promise<void> {
  const { superUrl } = stackUrls()
  await run(superUrl, `CREATE DATABASE ${name} OWNER keel_owner`)
  await run(
    urlFor('postgres', null, name),
    `ALTER SCHEMA public OWNER TO keel_owner;
     REVOKE ALL ON DATABASE ${name} FROM PUBLIC;
     ${runtimeRoles.map((r) => `GRANT CONNECT ON DATABASE ${name} TO ${r}; GRANT USAGE ON SCHEMA public TO ${r};`).join('\n')}`,
  )
}

export async function dropDatabase(name: string): Promise<void> {
  await run(stackUrls().superUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
}

/**
 * keel's accessor and the policy rlsPolicySql() emits (README, "Tenancy modes"): the clean shape the
 * doctor must accept.
 */
export const ACCESSOR = `CREATE OR REPLACE FUNCTION public.keel_current_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '') $$;`

export function keelRls(table: string, column = 'tenant_id', cast = ''): string {
  const p = `${column} = (SELECT public.keel_current_tenant())${cast}`
  return `ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY; ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY keel_tenant_isolation ON ${table} FOR ALL USING (${p}) WITH CHECK (${p});`
}

/** The clean schema: tenants, customers, orders (composite keys), a shared plans table, an invoker view. */
export function cleanSchema(runtimeRole: string): string {
  return `
    ${ACCESSOR}
    CREATE TABLE tenants (id text PRIMARY KEY, name text NOT NULL);
    CREATE TABLE plans (id text PRIMARY KEY, price_cents integer NOT NULL);
    CREATE TABLE customers (
      tenant_id text NOT NULL REFERENCES tenants (id),
      id bigint GENERATED ALWAYS AS IDENTITY,
      email text,
      PRIMARY KEY (tenant_id, id),
      UNIQUE (tenant_id, email));
    CREATE TABLE orders (
      tenant_id text NOT NULL,
      id bigint GENERATED ALWAYS AS IDENTITY,
      customer_id bigint,
      plan_id text REFERENCES plans (id),
      PRIMARY KEY (tenant_id, id),
      FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id));
    CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id);
    CREATE VIEW customer_emails WITH (security_invoker = true) AS SELECT tenant_id, email FROM customers;
    INSERT INTO tenants VALUES ('t1', 'one'), ('t2', 'two');
    INSERT INTO customers (tenant_id, email) VALUES ('t1', 'a@one'), ('t2', 'b@two');
    INSERT INTO orders (tenant_id, customer_id) SELECT tenant_id, id FROM customers;
    ${keelRls('tenants', 'id')}
    ${keelRls('customers')}
    ${keelRls('orders')}
    GRANT SELECT ON plans TO ${runtimeRole};
    GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, customers, orders, customer_emails TO ${runtimeRole};
  `
}

/** A tenant table with keel's policy and nothing wrong, plus `extra` columns; rows for t1 and t2. */
function table(name: string, runtimeRole: string, extra = '', rls = keelRls(name)): string {
  return `
    CREATE TABLE ${name} (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY${extra}, PRIMARY KEY (tenant_id, id));
    INSERT INTO ${name} (tenant_id) VALUES ('t1'), ('t2');
    ${rls}
    GRANT SELECT, INSERT, UPDATE, DELETE ON ${name} TO ${runtimeRole};`
}

/**
 * At least one violation per rule, each on its own object, and look-alikes that are fine (soft_deleted's
 * `deleted_at IS NULL`, dead_insert's widening): run as keel_owner.
 */
export function plantedSchema(r: string): string {
  const leaky = `CREATE FUNCTION public.is_demo() RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog
    AS $$ SELECT current_setting('app.tenant_id', true) IS NOT NULL OR true $$;`
  const pred = 'tenant_id = (SELECT public.keel_current_tenant())'
  return `
    ${table('no_rls', r, '', '')}
    ${table('not_forced', r, '', keelRls('not_forced').replace('ALTER TABLE not_forced FORCE ROW LEVEL SECURITY;', ''))}
    ${table('no_policy', r, '', 'ALTER TABLE no_policy ENABLE ROW LEVEL SECURITY; ALTER TABLE no_policy FORCE ROW LEVEL SECURITY;')}
    ${table(
      'no_check',
      r,
      '',
      `ALTER TABLE no_check ENABLE ROW LEVEL SECURITY; ALTER TABLE no_check FORCE ROW LEVEL SECURITY;
      CREATE POLICY only_using ON no_check FOR ALL USING (${pred});`,
    )}
    ${table(
      'always_true',
      r,
      '',
      `ALTER TABLE always_true ENABLE ROW LEVEL SECURITY; ALTER TABLE always_true FORCE ROW LEVEL SECURITY;
      CREATE POLICY open ON always_true FOR ALL USING (true) WITH CHECK (true);`,
    )}
    ${table(
      'fails_open',
      r,
      '',
      `ALTER TABLE fails_open ENABLE ROW LEVEL SECURITY; ALTER TABLE fails_open FORCE ROW LEVEL SECURITY;
      CREATE POLICY coalesced ON fails_open FOR ALL
        USING (tenant_id = COALESCE(NULLIF(current_setting('app.tenant_id', true), ''), tenant_id))
        WITH CHECK (tenant_id = COALESCE(NULLIF(current_setting('app.tenant_id', true), ''), tenant_id));`,
    )}
    ${table(
      'other_setting',
      r,
      '',
      `ALTER TABLE other_setting ENABLE ROW LEVEL SECURITY; ALTER TABLE other_setting FORCE ROW LEVEL SECURITY;
      CREATE POLICY wrong_setting ON other_setting FOR ALL
        USING (tenant_id = current_setting('app.org', true)) WITH CHECK (tenant_id = current_setting('app.org', true));`,
    )}
    ${table(
      'widened',
      r,
      ', shared_with text',
      `${keelRls('widened')}
      CREATE POLICY shared_rows ON widened FOR SELECT USING (shared_with = (SELECT public.keel_current_tenant()));`,
    )}
    CREATE TABLE casts_column (tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (tenant_id, id));
    ALTER TABLE casts_column ENABLE ROW LEVEL SECURITY; ALTER TABLE casts_column FORCE ROW LEVEL SECURITY;
    CREATE POLICY text_compare ON casts_column FOR ALL
      USING (tenant_id::text = (SELECT public.keel_current_tenant())) WITH CHECK (tenant_id::text = (SELECT public.keel_current_tenant()));
    GRANT SELECT, INSERT, UPDATE, DELETE ON casts_column TO ${r};
    CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message text);
    GRANT SELECT, INSERT ON audit_log TO ${r};
    CREATE SEQUENCE invoice_numbers;
    GRANT USAGE ON SEQUENCE invoice_numbers TO ${r};
    DO $$ DECLARE o oid; BEGIN
      o := lo_from_bytea(0, 'tenant t1 contract');
      EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO ${r}', o);
    END $$;
    CREATE VIEW customer_names AS SELECT tenant_id, email FROM customers;
    CREATE MATERIALIZED VIEW customer_counts AS SELECT tenant_id, count(*) AS n FROM customers GROUP BY tenant_id;
    GRANT SELECT ON customer_names, customer_counts TO ${r};
    CREATE FUNCTION public.count_all_customers() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp AS $$ SELECT count(*) FROM public.customers $$;
    CREATE FUNCTION public.purge_tenant(t text) RETURNS void LANGUAGE sql SECURITY DEFINER
      AS $$ DELETE FROM public.customers WHERE tenant_id = t $$;
    REVOKE EXECUTE ON FUNCTION public.purge_tenant(text) FROM PUBLIC;
    ${table('referrals', r, ', partner_tenant text REFERENCES tenants (id)')}
    ${table('accounts', r, ', email text UNIQUE')}
    ${table('events', r, ', at timestamptz NOT NULL DEFAULT now()')}
    CREATE INDEX events_at ON events (at);
    CREATE SCHEMA scratch;
    GRANT CREATE ON SCHEMA scratch TO PUBLIC;
    ${leaky}
    ${table(
      'probe_read',
      r,
      '',
      `ALTER TABLE probe_read ENABLE ROW LEVEL SECURITY; ALTER TABLE probe_read FORCE ROW LEVEL SECURITY;
      CREATE POLICY leaky_read ON probe_read FOR ALL USING (${pred} OR public.is_demo()) WITH CHECK (${pred});`,
    )}
    ${table(
      'probe_insert',
      r,
      '',
      `ALTER TABLE probe_insert ENABLE ROW LEVEL SECURITY; ALTER TABLE probe_insert FORCE ROW LEVEL SECURITY;
      CREATE POLICY leaky_write ON probe_insert FOR ALL USING (${pred}) WITH CHECK (${pred} OR public.is_demo());`,
    )}
    ${table('owned_by_app', r)}
    ${table('owned_by_group', r)}
    ${table(
      'soft_deleted',
      r,
      ', deleted_at timestamptz',
      `ALTER TABLE soft_deleted ENABLE ROW LEVEL SECURITY; ALTER TABLE soft_deleted FORCE ROW LEVEL SECURITY;
      CREATE POLICY live_rows ON soft_deleted FOR ALL USING (${pred} AND deleted_at IS NULL) WITH CHECK (${pred});
      CREATE POLICY live_rows_by_setting ON soft_deleted AS RESTRICTIVE FOR ALL
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '') AND deleted_at IS NULL)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));`,
    )}
    ${table(
      'or_empty',
      r,
      '',
      `ALTER TABLE or_empty ENABLE ROW LEVEL SECURITY; ALTER TABLE or_empty FORCE ROW LEVEL SECURITY;
      CREATE POLICY reads ON or_empty FOR SELECT USING (${pred});
      CREATE POLICY insert_or_empty ON or_empty FOR INSERT
        WITH CHECK (tenant_id = current_setting('app.tenant_id', true) OR current_setting('app.tenant_id', true) = '');`,
    )}
    ${table(
      'shared_rows',
      r,
      ', shared boolean NOT NULL DEFAULT false',
      `ALTER TABLE shared_rows ENABLE ROW LEVEL SECURITY; ALTER TABLE shared_rows FORCE ROW LEVEL SECURITY;
      CREATE POLICY own_or_shared ON shared_rows FOR ALL USING (${pred} OR shared);`,
    )}
    ${table(
      'dead_insert',
      r,
      '',
      // Beside keel's FOR ALL policy: a dead policy widens nothing (no policies-permissive-widen).
      `${keelRls('dead_insert')}
      CREATE POLICY insert_nothing ON dead_insert FOR INSERT;`,
    )}
    CREATE FUNCTION public.norm_tenant(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT t $$;
    CREATE FUNCTION public.tenant_setting() RETURNS text LANGUAGE sql STABLE
      AS $$ SELECT norm_tenant(NULLIF(current_setting('app.tenant_id', true), '')) $$;
    ${table('path_policy', r, '', keelRls('path_policy').replaceAll('public.keel_current_tenant()', 'public.tenant_setting()'))}
  `
}

/** The planted set: rule -> object, exactly what the doctor must report on the fixture. */
export const PLANTED: ReadonlyArray<readonly [string, string]> = [
  ['runtime-role-member-of-bypass', '<runtime>'],
  ['runtime-role-owns-tenant-table', 'public.owned_by_app'],
  // Owned by a role the runtime role inherits.
  ['runtime-role-owns-tenant-table', 'public.owned_by_group'],
  ['rls-disabled', 'public.no_rls'],
  ['rls-not-forced', 'public.not_forced'],
  ['policy-missing', 'public.no_policy'],
  ['policy-without-with-check', 'public.no_check:only_using'],
  // The error form: USING admits shared rows of every tenant, and is the write check too.
  ['policy-without-with-check', 'public.shared_rows:own_or_shared'],
  // FOR INSERT without WITH CHECK admits nothing (Postgres adds a false check): a warning, not a leak.
  ['policy-without-with-check', 'public.dead_insert:insert_nothing'],
  ['policy-always-true', 'public.always_true:open'],
  ['policy-fails-open', 'public.fails_open:coalesced'],
  // An OR branch true when the setting is empty (soft_deleted's `deleted_at IS NULL` is not reported).
  ['policy-fails-open', 'public.or_empty:insert_or_empty'],
  ['policy-ignores-setting', 'public.other_setting:wrong_setting'],
  ['policies-permissive-widen', 'public.widened'],
  ['policy-casts-column', 'public.casts_column:text_compare'],
  ['table-not-tenant-scoped', 'public.audit_log'],
  ['sequence-shared', 'public.invoice_numbers'],
  ['large-object-shared', 'large objects'],
  ['view-without-security-invoker', 'public.customer_names'],
  ['matview-over-tenant-table', 'public.customer_counts'],
  ['security-definer-reachable', 'public.count_all_customers()'],
  ['function-mutable-search-path', 'public.purge_tenant(t text)'],
  // Not SECURITY DEFINER, but a tenant policy calls it and it names norm_tenant through the search_path.
  ['function-mutable-search-path', 'public.tenant_setting()'],
  ['foreign-key-without-tenant', 'public.referrals:referrals_partner_tenant_fkey'],
  ['unique-without-tenant', 'public.accounts:accounts_email_key'],
  ['index-not-leading-tenant', 'public.events:events_at'],
  ['schema-public-create', 'scratch'],
  ['probe-cross-tenant-read', 'public.probe_read'],
  ['probe-cross-tenant-insert', 'public.probe_insert'],
]
