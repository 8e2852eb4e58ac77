export type Severity = 'error' | 'warning'

/** One thing the doctor found: which rule, how bad, on what, why it leaks or slows, and the SQL that fixes it. */
export interface Finding {
  rule: DoctorRule
  severity: Severity
  /** `schema.table`, `schema.table:policy`, `schema.index`, `schema.fn(args)`, a role, a schema; `db/…` in database mode. */
  object: string
  message: string
  /** The exact SQL (or step) that fixes it. */
  fix: string
}

/** Every rule, its default severity and one line on what it guards. docs/doctor/<rule>.md explains each. */
export const doctorRules = {
  'runtime-role-superuser': ['error', 'the runtime role is a superuser: RLS never applies to it'],
  'runtime-role-bypassrls': ['error', 'the runtime role has BYPASSRLS: RLS never applies to it'],
  'runtime-role-member-of-bypass': [
    'error',
    'the runtime role can SET ROLE to a superuser or BYPASSRLS role',
  ],
  'runtime-role-owns-tenant-table': [
    'error',
    'the runtime role owns (or inherits the owner of) a tenant table',
  ],
  'rls-disabled': ['error', 'a tenant table without row level security'],
  'rls-not-forced': ['error', 'a tenant table without FORCE ROW LEVEL SECURITY: its owner is not bound'],
  'policy-missing': ['error', 'a tenant table with RLS on and no policy that applies to the runtime role'],
  'policy-without-with-check': ['error', 'a policy that allows writes without a WITH CHECK'],
  'policy-always-true': ['error', 'a policy whose USING or WITH CHECK is true: every tenant passes'],
  'policy-fails-open': ['error', 'a policy that lets every row through when the tenant setting is unset'],
  'policy-ignores-setting': ['error', "a policy that does not read keel's tenant setting"],
  'policies-permissive-widen': ['error', 'several permissive policies OR together, widening the tenant one'],
  'policy-casts-column': ['warning', 'a policy casts the tenant column instead of the setting: no index use'],
  'table-not-tenant-scoped': ['error', 'a table without the tenant column that is not declared shared'],
  'sequence-shared': ['warning', 'a standalone sequence every tenant draws from'],
  'large-object-shared': ['error', 'large objects the runtime role can read: they have no tenant and no RLS'],
  'view-without-security-invoker': ['error', 'a view over a tenant table that runs as its owner'],
  'matview-over-tenant-table': ['error', 'a materialized view over a tenant table: RLS does not apply to it'],
  'security-definer-reachable': ['error', 'a SECURITY DEFINER function the runtime role can execute'],
  'function-mutable-search-path': [
    'warning',
    'a SECURITY DEFINER or policy function without a fixed search_path',
  ],
  'foreign-key-without-tenant': [
    'error',
    'a foreign key between tenant tables that does not include the tenant column',
  ],
  'unique-without-tenant': [
    'error',
    'a unique constraint or index on a tenant table without the tenant column',
  ],
  'index-not-leading-tenant': [
    'warning',
    'an index or primary key on a tenant table that does not lead with the tenant column',
  ],
  'schema-drift': ['error', 'a tenant schema whose tables, columns, keys or policies differ from the others'],
  'schema-public-create': ['error', 'a schema where PUBLIC may CREATE objects'],
  'tenant-database-unreachable': ['error', 'database mode: a tenant database the doctor could not inspect'],
  'tenant-database-connect': [
    'error',
    "database mode: PUBLIC, or another tenant's role, may CONNECT to a tenant database",
  ],
  'probe-cross-tenant-read': ['error', 'live probe: a synthetic tenant read rows that are not its own'],
  'probe-cross-tenant-insert': [
    'error',
    'live probe: an insert for another tenant was not refused with 42501',
  ],
} as const satisfies Record<string, readonly [Severity, string]>

export type DoctorRule = keyof typeof doctorRules

export function finding(
  rule: DoctorRule,
  object: string,
  message: string,
  fix: string,
  severity: Severity = doctorRules[rule][0],
): Finding {
  return { rule, severity, object, message, fix }
}
