import type pg from 'pg'
import { z } from 'zod'
import type { OutboxRow, StagedJob } from '../client/job-port.js'
import { KeelError } from '../errors.js'
import { quoteIdentifier } from '../tenancy/schema-strategy.js'

export const OUTBOX_TABLE = 'keel_job_outbox'
/**
 * The sweep's one look across tenants (ADR 0025): SECURITY DEFINER, owned by the outbox's owner, it
 * returns the ids of tenants with stale rows and nothing else; the sweep then reads each tenant's rows in
 * that tenant's scope.
 */
export const OUTBOX_TENANTS_FUNCTION = 'keel_job_outbox_tenants'

const optionsSchema = z.strictObject({
  /** The runtime role that enqueues and relays. */
  role: z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/),
  /** @default 'app.tenant_id' */
  setting: z
    .string()
    .regex(/^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/)
    .default('app.tenant_id'),
})

export type JobOutboxOptions = z.input<typeof optionsSchema>

/**
 * The outbox `tx.enqueue()` writes in the caller's transaction, so a job exists exactly when its
 * transaction commits. Row-level security keeps it tenant-scoped for every statement of the runtime role:
 * no setting it can set itself widens what it sees (ADR 0025). The relay and the sweep read and delete
 * rows in the tenant's scope; the sweep finds the tenants through a SECURITY DEFINER function that returns
 * only tenant ids, and the owner sees all rows only inside it (a policy on the owner's exact name, not
 * its members). The runtime role gets SELECT, INSERT, UPDATE, DELETE: UPDATE because the sweep claims
 * rows with `FOR UPDATE SKIP LOCKED`, which Postgres allows only with it. Run as the table owner, in a
 * migration. Idempotent; re-run it after upgrading keel.
 */
export function jobOutboxSql(options: JobOutboxOptions): string[] {
  const parsed = optionsSchema.safeParse(options)
  if (!parsed.success) {
    throw new KeelError(
      'KEEL_CONFIG_INVALID',
      `invalid job outbox options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      {
        details: { fields: parsed.error.issues.map((i) => i.path.join('.')) },
      },
    )
  }
  const { role, setting } = parsed.data
  const tenant = `NULLIF(current_setting('${setting}', true), '')`
  const grantee = quoteIdentifier(role)
  // The function and the owner's policy name the schema and the owner as they are when this runs.
  const definer = `DO $keel$
BEGIN
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION %1$I.${OUTBOX_TENANTS_FUNCTION}(older_than_ms double precision, max_tenants integer)
       RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
       AS $f$ SELECT tenant_id FROM %1$I.${OUTBOX_TABLE}
              WHERE created_at < now() - make_interval(secs => older_than_ms / 1000)
              GROUP BY tenant_id ORDER BY min(created_at) LIMIT max_tenants $f$',
    current_schema());
  EXECUTE format(
    'CREATE POLICY keel_outbox_owner ON ${OUTBOX_TABLE} FOR SELECT USING (current_user = %L)',
    (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = '${OUTBOX_TABLE}'::regclass));
END
$keel$`
  return [
    `CREATE TABLE IF NOT EXISTS ${OUTBOX_TABLE} (
      tenant_id text NOT NULL,
      id text NOT NULL,
      name text NOT NULL,
      payload jsonb NOT NULL,
      options jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, id)
    )`,
    `CREATE INDEX IF NOT EXISTS ${OUTBOX_TABLE}_created ON ${OUTBOX_TABLE} (created_at)`,
    `ALTER TABLE ${OUTBOX_TABLE} ENABLE ROW LEVEL SECURITY`,
    `ALTER TABLE ${OUTBOX_TABLE} FORCE ROW LEVEL SECURITY`,
    `DROP POLICY IF EXISTS keel_outbox_tenant ON ${OUTBOX_TABLE}`,
    `CREATE POLICY keel_outbox_tenant ON ${OUTBOX_TABLE} FOR ALL USING (tenant_id = (SELECT ${tenant})) WITH CHECK (tenant_id = (SELECT ${tenant}))`,
    `DROP POLICY IF EXISTS keel_outbox_owner ON ${OUTBOX_TABLE}`,
    definer,
    `REVOKE ALL ON FUNCTION ${OUTBOX_TENANTS_FUNCTION}(double precision, integer) FROM PUBLIC`,
    `GRANT EXECUTE ON FUNCTION ${OUTBOX_TENANTS_FUNCTION}(double precision, integer) TO ${grantee}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ${OUTBOX_TABLE} TO ${grantee}`,
  ]
}

export type { OutboxRow } from '../client/job-port.js'

/** A tx.enqueue()'s row and its INSERT, run in the caller's transaction (a row written twice is one). */
export function outboxInsert(row: OutboxRow): StagedJob {
  return {
    row,
    text: `INSERT INTO ${OUTBOX_TABLE} (tenant_id, id, name, payload, options) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
    values: [row.tenant_id, row.id, row.name, JSON.stringify(row.payload), JSON.stringify(row.options)],
  }
}

/** Runs `jobOutboxSql()` in one transaction on a client connected as the table owner. */
export async function applyJobOutbox(
  client: Pick<pg.Client, 'query'>,
  options: JobOutboxOptions,
): Promise<void> {
  const statements = jobOutboxSql(options)
  await client.query('BEGIN')
  try {
    for (const statement of statements) await client.query(statement)
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined)
    throw error
  }
}
