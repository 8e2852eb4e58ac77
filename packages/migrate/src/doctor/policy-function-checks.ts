import { parseSync } from 'libpg-query'
import type { Catalog, FunctionInfo } from './catalog.js'
import { type Finding, finding } from './rules.js'
import { qualified } from './sql-names.js'
import type { TenantTable } from './tenant-tables.js'

const hasSearchPath = (f: FunctionInfo): boolean => f.config.some((c) => c.startsWith('search_path='))

/**
 * What the body names through the search_path that pg_catalog does not hold, or undefined when the body
 * is not SQL the doctor can parse (then it cannot tell, and says so). pg_catalog is searched first
 * unless a search_path lists it later explicitly, so a built-in named unqualified cannot be shadowed.
 */
export function unqualifiedNames(f: FunctionInfo, builtins: Catalog['builtins']): string[] | undefined {
  if (f.language !== 'sql' || f.source.trim() === '') return undefined
  let tree: unknown
  try {
    tree = parseSync(f.source)
  } catch {
    return undefined
  }
  const found = new Set<string>()
  const names = (list: unknown): string[] =>
    Array.isArray(list)
      ? list.map((n) => ((n as Record<string, { sval?: string }>).String?.sval ?? '') as string)
      : []
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) visit(n)
      return
    }
    if (node === null || typeof node !== 'object') return
    for (const [key, value] of Object.entries(node as Record<string, unknown>)) {
      const v = value as Record<string, unknown>
      if (key === 'FuncCall') {
        const n = names(v.funcname)
        if (n.length === 1 && !builtins.functions.has(n[0]!)) found.add(`function ${n[0]}`)
      } else if (key === 'RangeVar' && v.schemaname === undefined) {
        found.add(`relation ${String(v.relname)}`)
      } else if (key === 'TypeName') {
        const n = names(v.names)
        if (n.length === 1 && !builtins.types.has(n[0]!)) found.add(`type ${n[0]}`)
      } else if (key === 'A_Expr') {
        const n = names(v.name)
        if (n.length === 1 && !builtins.operators.has(n[0]!)) found.add(`operator ${n[0]}`)
      }
      visit(value)
    }
  }
  visit(tree)
  return [...found].sort()
}

/**
 * Functions that tenant-table policies call (found by their oids in the policy trees) without a fixed
 * search_path, whose body names something the caller's search_path decides. SECURITY DEFINER ones are
 * reported with the definer functions already.
 */
export function policyFunctionFindings(
  catalog: Catalog,
  tables: readonly TenantTable[],
  prefix: string,
): Finding[] {
  const callers = new Map<number, string[]>()
  for (const t of tables) {
    for (const p of catalog.policies.get(t.relation.oid) ?? []) {
      for (const tree of [p.qualTree, p.withCheckTree]) {
        for (const m of tree?.matchAll(/:funcid (\d+)/g) ?? []) {
          const oid = Number(m[1])
          const list = callers.get(oid) ?? []
          const who = `${t.display}:${p.name}`
          if (!list.includes(who)) callers.set(oid, [...list, who])
        }
      }
    }
  }
  const out: Finding[] = []
  for (const [oid, used] of callers) {
    const f = catalog.policyFunctions.get(oid)
    if (f === undefined || f.securityDefiner || hasSearchPath(f)) continue
    const names = unqualifiedNames(f, catalog.builtins)
    if (names !== undefined && names.length === 0) continue
    const name = `${f.schema}.${f.name}(${f.args})`
    const why =
      names === undefined
        ? `its body (${f.language}) is not SQL the doctor can read, so what it resolves through the caller's search_path is unknown`
        : `its body names ${names.join(', ')} unqualified, resolved through the caller's search_path`
    out.push(
      finding(
        'function-mutable-search-path',
        prefix + name,
        `${name} is called by the tenant policy ${used.join(', ')} and has no fixed search_path: ${why}. A role that can create objects in a schema on that path (a PUBLIC CREATE schema, its own schema) can plant a same-named object and change what the policy admits.`,
        `ALTER FUNCTION ${qualified(f.schema, f.name)}(${f.args}) SET search_path = pg_catalog, pg_temp;  -- or schema-qualify every name in its body`,
      ),
    )
  }
  return out
}
