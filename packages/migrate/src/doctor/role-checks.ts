import type { Catalog } from './catalog.js'
import { type Finding, finding } from './rules.js'
import { ident } from './sql-names.js'

export function roleFindings(catalog: Catalog, mode: 'rls' | 'schema' | 'database'): Finding[] {
  const out: Finding[] = []
  const role = catalog.role.name
  if (catalog.role.superuser) {
    out.push(
      finding(
        'runtime-role-superuser',
        role,
        `${role} is a superuser: row level security never applies to it, FORCE or not, and it can read every tenant's data in every database.`,
        `ALTER ROLE ${ident(role)} NOSUPERUSER;`,
      ),
    )
  }
  if (catalog.role.bypassRls && mode !== 'database') {
    out.push(
      finding(
        'runtime-role-bypassrls',
        role,
        `${role} has BYPASSRLS: every policy is skipped for it, so every tenant sees every row.`,
        `ALTER ROLE ${ident(role)} NOBYPASSRLS;`,
      ),
    )
  }
  // A superuser counts as a member of every role: membership says nothing more about it.
  for (const other of catalog.role.superuser ? [] : catalog.bypassRoles) {
    const what = other.superuser ? 'a superuser' : 'BYPASSRLS'
    out.push(
      finding(
        'runtime-role-member-of-bypass',
        role,
        `${role} is a member of ${other.name} (${what}): one SET ROLE ${other.name} and policies no longer apply. Role attributes are not inherited, but membership lets it become that role.`,
        `REVOKE ${ident(other.name)} FROM ${ident(role)};`,
      ),
    )
  }
  return out
}
