import type pg from 'pg'
import { z } from 'zod'
import { KeelError } from '../errors.js'
import { quoteIdentifier } from '../tenancy/schema-strategy.js'

export const OUTBOX_TABLE = 'keel_job_outbox'
/** The relay reads every tenant's rows: a policy admits it when this transaction-local setting is on. */
export const RELAY_SETTING = 'keel.outbox_relay'

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
 * transaction commits. Row-level security keeps it tenant-scoped for ordinary statements (a tenant sees
 * only its own pending jobs); the relay reads all tenants with a transaction-local setting. Run as the
 * table owner, in a migration. Idempotent.
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
  const relay = `current_setting('${RELAY_SETTING}', true) = 'on'`
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
    `CREATE POLICY keel_outbox_tenant ON ${OUTBOX_TABLE} FOR ALL USING (tenant_id = (SELECT ${tenant}) OR (SELECT ${relay})) WITH CHECK (tenant_id = (SELECT ${tenant}))`,
    `GRANT SELECT, INSERT, DELETE ON ${OUTBOX_TABLE} TO ${quoteIdentifier(role)}`,
  ]
}

export interface OutboxRow {
  tenant_id: string
  id: string
  name: string
  payload: unknown
  options: { delayMs?: number; priority?: number }
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
