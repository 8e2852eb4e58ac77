import type { Catalog, FunctionInfo } from './catalog.js'
import { type Finding, finding } from './rules.js'
import { ident, qualified } from './sql-names.js'

/**
 * Objects keel itself creates whose shape is deliberate (ADR 0025): the outbox sweep's one cross-tenant
 * look is a SECURITY DEFINER function with a fixed search_path that returns tenant ids only, and the
 * sweep's index is by age across tenants.
 */
const keelOwn = {
  definer: (f: FunctionInfo) => f.name === 'keel_job_outbox_tenants' && hasSearchPath(f),
  index: (name: string) => name === 'keel_job_outbox_created',
}
export const isKeelOwnIndex = keelOwn.index

const hasSearchPath = (f: FunctionInfo): boolean => f.config.some((c) => c.startsWith('search_path='))
const fnName = (f: FunctionInfo): string => `${f.schema}.${f.name}(${f.args})`

/** Views and materialized views reading a tenant table, directly or through other views. */
export function viewFindings(
  catalog: Catalog,
  isTenantTable: (oid: number) => boolean,
  runtimeRole: string,
  prefix: string,
): Finding[] {
  const out: Finding[] = []
  const memo = new Map<number, boolean>()
  const readsTenant = (oid: number, seen: Set<number>): boolean => {
    const known = memo.get(oid)
    if (known !== undefined) return known
    if (seen.has(oid)) return false
    seen.add(oid)
    const result = (catalog.viewDeps.get(oid) ?? []).some((d) => isTenantTable(d) || readsTenant(d, seen))
    memo.set(oid, result)
    return result
  }
  for (const r of catalog.relations) {
    if ((r.kind !== 'v' && r.kind !== 'm') || !readsTenant(r.oid, new Set())) continue
    const name = `${r.schema}.${r.name}`
    const q = qualified(r.schema, r.name)
    if (r.kind === 'v') {
      const invoker = r.options.some((o) => /^security_invoker=(true|on|1|yes)$/i.test(o))
      if (invoker || !r.runtimeSelect) continue
      out.push(
        finding(
          'view-without-security-invoker',
          prefix + name,
          `View ${name} reads a tenant table and runs with its owner's (${r.owner}) rights: the owner is not bound by the runtime role's policies, so ${runtimeRole} reads every tenant through it.`,
          `ALTER VIEW ${q} SET (security_invoker = true);`,
        ),
      )
    } else if (r.runtimeSelect) {
      out.push(
        finding(
          'matview-over-tenant-table',
          prefix + name,
          `Materialized view ${name} stores rows of a tenant table; row level security does not apply to materialized views, so ${runtimeRole} reads every tenant's rows in it.`,
          `REVOKE ALL ON ${q} FROM ${ident(runtimeRole)}, PUBLIC;  -- or replace it with a tenant-scoped table (tenant_id + RLS) refreshed by a job`,
        ),
      )
    }
  }
  return out
}

export function functionFindings(catalog: Catalog, runtimeRole: string, prefix: string): Finding[] {
  const out: Finding[] = []
  for (const f of catalog.functions) {
    if (!f.securityDefiner) continue
    const name = fnName(f)
    const sig = `${qualified(f.schema, f.name)}(${f.args})`
    if (f.executable && !keelOwn.definer(f)) {
      out.push(
        finding(
          'security-definer-reachable',
          prefix + name,
          `${name} is SECURITY DEFINER (runs as ${f.owner}, whom the runtime role's policies do not bind) and ${runtimeRole} can EXECUTE it: whatever it reads, it reads across tenants.`,
          `ALTER FUNCTION ${sig} SECURITY INVOKER;  -- or: REVOKE EXECUTE ON FUNCTION ${sig} FROM PUBLIC, ${ident(runtimeRole)};`,
        ),
      )
    }
    if (!hasSearchPath(f)) {
      out.push(
        finding(
          'function-mutable-search-path',
          prefix + name,
          `${name} is SECURITY DEFINER without a fixed search_path: a caller who can create objects in a schema on its search_path (or pg_temp) can make it run their code as ${f.owner}.`,
          `ALTER FUNCTION ${sig} SET search_path = pg_catalog, pg_temp;  -- and schema-qualify what it references`,
        ),
      )
    }
  }
  return out
}

export function sharedObjectFindings(catalog: Catalog, runtimeRole: string, prefix: string): Finding[] {
  const out: Finding[] = []
  for (const s of catalog.sequences) {
    if (s.owned || !s.usable) continue
    const name = `${s.schema}.${s.name}`
    out.push(
      finding(
        'sequence-shared',
        prefix + name,
        `Sequence ${name} belongs to no column and ${runtimeRole} can use it: every tenant draws from one counter, so numbers reveal other tenants' activity, and setval/nextval by one tenant moves everyone's.`,
        `ALTER SEQUENCE ${qualified(s.schema, s.name)} OWNED BY <table>.<column>;  -- and prefer per-tenant numbering (tenant_id, n) or uuids for tenant-visible ids; REVOKE UPDATE ON SEQUENCE ${qualified(s.schema, s.name)} FROM ${ident(runtimeRole)}`,
      ),
    )
  }
  const lo = catalog.largeObjects
  const readable = lo.compatPrivileges ? lo.total : lo.readable
  if (readable > 0) {
    out.push(
      finding(
        'large-object-shared',
        `${prefix}large objects`,
        `${readable} large object(s) are readable by ${runtimeRole}${lo.compatPrivileges ? ' (lo_compat_privileges is on: no permission checks at all)' : ''}: large objects have no tenant column and no row level security, so any tenant who guesses an oid reads them.`,
        `Move the data into a bytea column of a tenant table; meanwhile ALTER LARGE OBJECT <oid> OWNER TO <owner>; REVOKE SELECT, UPDATE ON LARGE OBJECT <oid> FROM PUBLIC, ${ident(runtimeRole)};${lo.compatPrivileges ? ' ALTER SYSTEM SET lo_compat_privileges = off;' : ''}`,
      ),
    )
  }
  return out
}

export function schemaPrivilegeFindings(catalog: Catalog, prefix: string): Finding[] {
  return catalog.publicCreateSchemas.map((s) =>
    finding(
      'schema-public-create',
      `${prefix}${s}`,
      `PUBLIC may CREATE in schema ${s}: any role, the runtime role included, can plant a function or operator there that shadows one a policy or a SECURITY DEFINER function calls, or a table a migration expects.`,
      `REVOKE CREATE ON SCHEMA ${ident(s)} FROM PUBLIC;`,
    ),
  )
}
