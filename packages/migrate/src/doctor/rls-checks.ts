import type { Catalog, Policy } from './catalog.js'
import { appliesToRuntime, commandName, expressionFacts } from './policy-analysis.js'
import { type Finding, finding } from './rules.js'
import { ident, qualified } from './sql-names.js'
import type { TableSplit, TenantTable } from './tenant-tables.js'

export interface RlsContext {
  runtimeRole: string
  setting: string
  /** `db/` in database mode, '' otherwise: prefixes every object. */
  prefix: string
}

function predicate(t: TenantTable): string {
  const cast = /^(text|character varying.*)$/.test(t.column.type) ? '' : `::${t.column.type}`
  return `${ident(t.column.name)} = (SELECT public.keel_current_tenant())${cast}`
}

function keelPolicy(t: TenantTable, restrictive = false): string {
  const table = qualified(t.relation.schema, t.relation.name)
  return `CREATE POLICY keel_tenant_isolation ON ${table} AS ${restrictive ? 'RESTRICTIVE' : 'PERMISSIVE'} FOR ALL USING (${predicate(t)}) WITH CHECK (${predicate(t)});  -- or applyRlsPolicy(ownerClient, { table: '${t.display}', column: '${t.column.name}' })`
}

export function rlsFindings(catalog: Catalog, split: TableSplit, ctx: RlsContext): Finding[] {
  const out: Finding[] = []
  for (const t of split.tenant) out.push(...tableFindings(catalog, t, ctx))
  for (const r of split.undeclared) {
    const name = `${r.schema}.${r.name}`
    out.push(
      finding(
        'table-not-tenant-scoped',
        ctx.prefix + name,
        `${name} has no tenant column and is not in sharedTables: every tenant reads and writes the same rows${r.runtimeSelect ? ` (${ctx.runtimeRole} can SELECT it)` : ''}.`,
        `Either declare it shared (sharedTables: ['${name}']) or scope it: ALTER TABLE ${qualified(r.schema, r.name)} ADD COLUMN tenant_id text NOT NULL; then ENABLE/FORCE RLS and a policy (applyRlsPolicy).`,
      ),
    )
  }
  return out
}

function tableFindings(catalog: Catalog, t: TenantTable, ctx: RlsContext): Finding[] {
  const out: Finding[] = []
  const { relation } = t
  const object = ctx.prefix + t.display
  const table = qualified(relation.schema, relation.name)
  if (relation.runtimeOwns) {
    out.push(
      finding(
        'runtime-role-owns-tenant-table',
        object,
        `${ctx.runtimeRole} owns ${t.display} (owner: ${relation.owner}): an owner may ALTER or DROP the table and its policies, and without FORCE it skips them.`,
        `ALTER TABLE ${table} OWNER TO <migration owner>;  -- then GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO ${ident(ctx.runtimeRole)};`,
      ),
    )
  }
  if (!relation.rls) {
    out.push(
      finding(
        'rls-disabled',
        object,
        `${t.display} has the tenant column ${t.column.name} but row level security is off: any query without a WHERE on it reads every tenant.`,
        `ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY; ALTER TABLE ${table} FORCE ROW LEVEL SECURITY; ${keelPolicy(t)}`,
      ),
    )
    return out
  }
  if (!relation.forced) {
    out.push(
      finding(
        'rls-not-forced',
        object,
        `${t.display} does not FORCE row level security: its owner (${relation.owner}) and every role inheriting it skip the policies.`,
        `ALTER TABLE ${table} FORCE ROW LEVEL SECURITY;`,
      ),
    )
  }
  const policies = (catalog.policies.get(relation.oid) ?? []).filter((p) =>
    appliesToRuntime(p, ctx.runtimeRole),
  )
  if (policies.length === 0) {
    out.push(
      finding(
        'policy-missing',
        object,
        `${t.display} has row level security on but no policy that applies to ${ctx.runtimeRole}: every query returns nothing and every write fails, which pushes people to turn RLS off.`,
        keelPolicy(t),
      ),
    )
    return out
  }
  for (const p of policies) out.push(...policyFindings(catalog, t, p, ctx))
  out.push(...widening(catalog, t, policies, ctx))
  return out
}

function policyFindings(catalog: Catalog, t: TenantTable, p: Policy, ctx: RlsContext): Finding[] {
  const out: Finding[] = []
  const object = `${ctx.prefix}${t.display}:${p.name}`
  const table = qualified(t.relation.schema, t.relation.name)
  const drop = `DROP POLICY ${ident(p.name)} ON ${table};`
  const exprs = [
    { kind: 'USING', text: p.qual, tree: p.qualTree },
    { kind: 'WITH CHECK', text: p.withCheck, tree: p.withCheckTree },
  ].flatMap((e) =>
    e.text === null || e.tree === null
      ? []
      : [
          {
            kind: e.kind,
            text: e.text,
            facts: expressionFacts(e.text, e.tree, ctx.setting, t.column.num, catalog),
          },
        ],
  )
  const alwaysTrue = exprs.find((e) => e.facts.alwaysTrue)
  if (alwaysTrue !== undefined) {
    out.push(
      finding(
        'policy-always-true',
        object,
        `Policy ${p.name} on ${t.display} has ${alwaysTrue.kind} (true): every tenant's rows pass it${p.permissive ? ', and permissive policies OR together, so it opens the table' : ''}.`,
        `${drop} ${keelPolicy(t)}`,
      ),
    )
    return out
  }
  const ignoring = exprs.find((e) => !e.facts.readsSetting)
  if (ignoring !== undefined) {
    out.push(
      finding(
        'policy-ignores-setting',
        object,
        `Policy ${p.name} on ${t.display}: its ${ignoring.kind} (${ignoring.text}) does not read keel's setting ${ctx.setting}, so it does not follow the tenant keel scopes each statement to.`,
        `${drop} ${keelPolicy(t)}`,
      ),
    )
  }
  const open = exprs.find((e) => e.facts.failsOpen)
  if (open !== undefined) {
    out.push(
      finding(
        'policy-fails-open',
        object,
        `Policy ${p.name} on ${t.display}: its ${open.kind} (${open.text}) passes every row when ${ctx.setting} is unset or empty; a query that ran without a tenant reads all tenants.`,
        `${drop} ${keelPolicy(t)}  -- keel_current_tenant() turns unset and '' into NULL, which matches nothing`,
      ),
    )
  }
  const cast = exprs.find((e) => e.facts.castsColumn)
  if (cast !== undefined) {
    out.push(
      finding(
        'policy-casts-column',
        object,
        `Policy ${p.name} on ${t.display} applies a cast or function to ${t.column.name} (${cast.text}): Postgres cannot use the index on ${t.column.name}, so every tenant-scoped lookup scans.`,
        `${drop} ${keelPolicy(t)}  -- cast the setting to the column's type, never the column`,
      ),
    )
  }
  if (p.withCheck === null && p.cmd !== 'r' && p.cmd !== 'd')
    out.push(missingCheck(t, p, object, drop, exprs))
  return out
}

/**
 * A write policy without WITH CHECK. FOR ALL and UPDATE: Postgres checks new rows against USING, so it
 * leaks exactly when USING admits rows of other tenants (an OR branch not tied to the setting, e.g.
 * shared rows): a tenant then writes rows for any tenant that match that branch. FOR INSERT: a policy
 * without an expression admits nothing (Postgres adds a false check), so it is dead, not open.
 */
function missingCheck(
  t: TenantTable,
  p: Policy,
  object: string,
  drop: string,
  exprs: Array<{ kind: string; text: string; facts: { admitsOtherTenants: boolean } }>,
): Finding {
  const fix = `${drop} ${keelPolicy(t)}`
  if (p.cmd === 'a') {
    return finding(
      'policy-without-with-check',
      object,
      `Policy ${p.name} on ${t.display} is FOR INSERT without WITH CHECK: Postgres treats the missing check as false, so it admits no row, and whatever inserts succeed do so through another policy: it does not say what it seems to.`,
      fix,
      'warning',
    )
  }
  const using = exprs.find((e) => e.kind === 'USING')
  if (using?.facts.admitsOtherTenants === true) {
    return finding(
      'policy-without-with-check',
      object,
      `Policy ${p.name} on ${t.display} (FOR ${commandName[p.cmd]}) has no WITH CHECK, and its USING (${using.text}) admits rows of other tenants: Postgres checks new rows against USING, so a tenant can write rows for any other tenant that match that branch.`,
      `ALTER POLICY ${ident(p.name)} ON ${qualified(t.relation.schema, t.relation.name)} WITH CHECK (${predicate(t)});`,
      'error',
    )
  }
  return finding(
    'policy-without-with-check',
    object,
    `Policy ${p.name} on ${t.display} (FOR ${commandName[p.cmd]}) has no WITH CHECK: Postgres falls back to USING for new rows, so the write rule is implicit and changes whenever USING does.`,
    fix,
    'warning',
  )
}

const covers = (p: Policy, cmd: 'r' | 'a' | 'w' | 'd'): boolean => p.cmd === '*' || p.cmd === cmd

// A permissive policy without the expression a command uses adds nothing to the OR (Postgres skips
// it): `CREATE POLICY p ON t FOR INSERT` widens nothing.
const contributes = (p: Policy, cmd: 'r' | 'a' | 'w' | 'd'): boolean =>
  cmd === 'a'
    ? (p.withCheck ?? p.qual) !== null
    : cmd === 'w'
      ? p.qual !== null || p.withCheck !== null
      : p.qual !== null

function widening(catalog: Catalog, t: TenantTable, policies: Policy[], ctx: RlsContext): Finding[] {
  const restrictive = policies.filter(
    (p) =>
      !p.permissive &&
      p.qual !== null &&
      p.qualTree !== null &&
      expressionFacts(p.qual, p.qualTree, ctx.setting, t.column.num, catalog).readsSetting,
  )
  if (restrictive.length > 0) return []
  for (const cmd of ['r', 'a', 'w', 'd'] as const) {
    const permissive = policies.filter((p) => p.permissive && covers(p, cmd) && contributes(p, cmd))
    if (permissive.length < 2) continue
    const names = permissive.map((p) => p.name).join(', ')
    return [
      finding(
        'policies-permissive-widen',
        ctx.prefix + t.display,
        `${t.display} has ${permissive.length} permissive policies for ${commandName[cmd]} (${names}): permissive policies OR together, so any one of them admits a row whatever the tenant policy says.`,
        `${keelPolicy(t, true).replace('keel_tenant_isolation', 'keel_tenant_restrict')}  -- a RESTRICTIVE tenant predicate is ANDed with the others`,
      ),
    ]
  }
  return []
}
