import { z } from 'zod'
import { KeelError } from '../errors.js'
import { quoteIdentifier } from './schema-strategy.js'

const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, { message: 'must be a plain SQL identifier' })
const qualified = z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$/, {
  message: 'must be name or schema.name (plain identifiers)',
})

const optionsSchema = z.strictObject({
  /** `invoices` or `public.invoices`. */
  table: qualified,
  /** The tenant column; lead every key and index with it. @default 'tenant_id' */
  column: identifier.default('tenant_id'),
  /** The column's type: the setting is cast to it, never the column (a column cast defeats its index). @default 'text' */
  columnType: z.enum(['text', 'uuid', 'bigint', 'integer', 'varchar']).default('text'),
  /** @default 'app.tenant_id' */
  setting: z
    .string()
    .regex(/^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/)
    .default('app.tenant_id'),
  /** The accessor function that turns "unset" into NULL. @default 'public.keel_current_tenant' */
  accessor: qualified.default('public.keel_current_tenant'),
  /** Make the tenant predicate RESTRICTIVE so other permissive policies cannot widen it. @default false */
  restrictive: z.boolean().default(false),
  /** @default 'keel_tenant_isolation' */
  policyName: identifier.default('keel_tenant_isolation'),
})

export type RlsPolicyOptions = z.input<typeof optionsSchema>

function quoteQualified(name: string): string {
  return name.split('.').map(quoteIdentifier).join('.')
}

function parseOptions(options: RlsPolicyOptions) {
  const parsed = optionsSchema.safeParse(options)
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => i.path.join('.'))
    throw new KeelError(
      'KEEL_CONFIG_INVALID',
      `invalid RLS policy options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      { details: { fields } },
    )
  }
  return parsed.data
}

/**
 * The SQL that puts a table under tenant isolation, as TENANCY.md prescribes:
 * - an accessor that returns NULL when the setting is unset or '' (after any transaction-local
 *   set_config the placeholder reverts to '' rather than to unset), so a missing tenant matches nothing;
 * - ENABLE and FORCE row level security, so the table owner is bound too (superusers and BYPASSRLS
 *   roles are not: keel refuses to run as one);
 * - one policy for all commands, USING and WITH CHECK, comparing the column to `(SELECT accessor())`:
 *   the sub-select makes Postgres evaluate it once per statement instead of once per row.
 * Run it as the table owner, in a migration. Idempotent.
 */
export function rlsPolicySql(options: RlsPolicyOptions): string[] {
  const o = parseOptions(options)
  const table = quoteQualified(o.table)
  const accessor = quoteQualified(o.accessor)
  const column = quoteIdentifier(o.column)
  const policy = quoteIdentifier(o.policyName)
  const cast = o.columnType === 'text' ? '' : `::${o.columnType}`
  const predicate = `${column} = (SELECT ${accessor}())${cast}`
  return [
    `CREATE OR REPLACE FUNCTION ${accessor}() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT NULLIF(current_setting('${o.setting}', true), '') $$`,
    `ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`,
    `ALTER TABLE ${table} FORCE ROW LEVEL SECURITY`,
    `DROP POLICY IF EXISTS ${policy} ON ${table}`,
    `CREATE POLICY ${policy} ON ${table} AS ${o.restrictive ? 'RESTRICTIVE' : 'PERMISSIVE'} FOR ALL USING (${predicate}) WITH CHECK (${predicate})`,
  ]
}

/** The slice of a pg client that applyRlsPolicy needs. */
export interface SqlRunner {
  query(text: string): Promise<unknown>
}

/** The slice of a pg pool: a transaction needs one connection, so a pool lends one. */
export interface SqlRunnerPool {
  totalCount: number
  connect(): Promise<SqlRunner & { release(error?: unknown): void }>
}

/**
 * Applies rlsPolicySql() in one transaction, connected as the table owner (a pg.Client, a checked-out
 * client, or a pg.Pool from which one client is borrowed).
 */
export async function applyRlsPolicy(
  runner: SqlRunner | SqlRunnerPool,
  options: RlsPolicyOptions,
): Promise<void> {
  const statements = rlsPolicySql(options)
  if ('totalCount' in runner) {
    const client = await runner.connect()
    let failure: unknown
    try {
      await applyRlsPolicy(client, options)
    } catch (error) {
      failure = error
      throw error
    } finally {
      client.release(failure)
    }
    return
  }
  await runner.query('BEGIN')
  try {
    for (const statement of statements) await runner.query(statement)
    await runner.query('COMMIT')
  } catch (error) {
    await runner.query('ROLLBACK').catch(() => undefined)
    throw error
  }
}
