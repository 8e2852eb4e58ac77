import type pg from 'pg'
import { type Finding, finding } from './rules.js'
import { ident } from './sql-names.js'

/** One tenant database of the fleet (isolation 'database'), and the role its placement URL logs in as. */
export interface TenantDatabase {
  server: string
  database: string
  tenants: string[]
  /** The user of the placement's connection string; '' when it names none. */
  role: string
}

/**
 * Database isolation holds only as far as CONNECT does. Postgres grants CONNECT and TEMP on every new
 * database to PUBLIC, so any role of the cluster can then connect: that is always reported. When the
 * placements log in as different roles (a role per tenant), a tenant's role must not be able to connect
 * to another tenant's database. When every tenant shares one runtime role it connects everywhere by
 * design: there is nothing more to check, the app's tenant routing is the boundary.
 */
export async function connectFindings(
  client: pg.ClientBase,
  databases: readonly TenantDatabase[],
): Promise<Finding[]> {
  const names = [...new Set(databases.map((d) => d.database))]
  const roles = [...new Set(databases.map((d) => d.role).filter((r) => r !== ''))]
  const { rows } = await client.query<{ datname: string; public_privs: string[]; reachable: string[] }>(
    `SELECT d.datname,
            ARRAY(SELECT a.privilege_type FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                   WHERE a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY') ORDER BY 1) AS public_privs,
            ARRAY(SELECT r.rolname::text FROM pg_roles r
                   WHERE r.rolname = ANY ($2) AND has_database_privilege(r.oid, d.oid, 'CONNECT') ORDER BY 1) AS reachable
       FROM pg_database d WHERE d.datname = ANY ($1) ORDER BY d.datname`,
    [names, roles],
  )
  const out: Finding[] = []
  for (const row of rows) {
    if (row.public_privs.length > 0) {
      out.push(
        finding(
          'tenant-database-connect',
          row.datname,
          `PUBLIC has ${row.public_privs.join(' and ')} on tenant database ${row.datname} (Postgres grants both to PUBLIC on every new database): every role of the cluster, other tenants' included, can connect to it.`,
          `REVOKE CONNECT, TEMPORARY ON DATABASE ${ident(row.datname)} FROM PUBLIC;  -- then GRANT CONNECT ON DATABASE ${ident(row.datname)} TO <its runtime role>;`,
        ),
      )
    }
    // Through PUBLIC every role reaches it: the finding above says so once.
    if (roles.length < 2 || row.public_privs.includes('CONNECT')) continue
    const own = new Set(databases.filter((d) => d.database === row.datname).map((d) => d.role))
    const tenants = databases.filter((d) => d.database === row.datname).flatMap((d) => d.tenants)
    for (const role of row.reachable) {
      if (own.has(role)) continue
      const theirs = databases.filter((d) => d.role === role).flatMap((d) => d.tenants)
      out.push(
        finding(
          'tenant-database-connect',
          `${row.datname}:${role}`,
          `${role}, the role of tenant(s) ${theirs.join(', ')}, can CONNECT to ${row.datname}, the database of tenant(s) ${tenants.join(', ')}: a tenant's credentials reach another tenant's data.`,
          `REVOKE CONNECT ON DATABASE ${ident(row.datname)} FROM ${ident(role)};  -- and from any role it inherits CONNECT through`,
        ),
      )
    }
  }
  return out
}

const CLUSTER_RULES = new Set([
  'runtime-role-superuser',
  'runtime-role-bypassrls',
  'runtime-role-member-of-bypass',
])

/**
 * Role attributes and memberships belong to the server (cluster), not to a database: one finding per
 * server, not one per tenant database. With several servers the object names the server.
 */
export function dedupeRoleFindings(
  perServer: ReadonlyArray<{ server: string; findings: Finding[] }>,
): Finding[] {
  const servers = new Set(perServer.map((s) => s.server))
  const seen = new Set<string>()
  const out: Finding[] = []
  for (const { server, findings } of perServer) {
    for (const f of findings) {
      if (!CLUSTER_RULES.has(f.rule)) {
        out.push(f)
        continue
      }
      const key = `${server}|${f.rule}|${f.object}|${f.message}`
      if (seen.has(key)) continue
      seen.add(key)
      out.push(servers.size > 1 ? { ...f, object: `${server}/${f.object}` } : f)
    }
  }
  return out
}
