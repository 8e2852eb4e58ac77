import { createHash } from 'node:crypto'
import type { Catalog, Relation } from './catalog.js'
import { type Finding, finding } from './rules.js'

/**
 * One line per table, column, index, constraint and policy of a schema, with the schema's own name taken
 * out of the definitions: two tenant schemas migrated alike have the same lines.
 */
export function schemaLines(catalog: Catalog, schema: string, relations: readonly Relation[]): string[] {
  const lines: string[] = []
  const names = [schema, `"${schema.replace(/"/g, '""')}"`]
  const strip = (s: string) => names.reduce((acc, n) => acc.split(`${n}.`).join(''), s)
  for (const r of relations) {
    lines.push(`${r.kind} ${r.name} rls=${r.rls} force=${r.forced}`)
    for (const c of catalog.columns.get(r.oid) ?? []) {
      lines.push(
        `${r.name}.${c.name} ${c.type}${c.notNull ? ' not null' : ''}${c.hasDefault ? ' default' : ''}`,
      )
    }
    // Index shapes from pg_index (no pg_get_indexdef: deparsing 20,000 indexes costs seconds).
    const cols = catalog.columns.get(r.oid) ?? []
    for (const i of catalog.indexes.get(r.oid) ?? []) {
      const keys = i.keys.map((k) => (k === 0 ? '(expr)' : (cols.find((c) => c.num === k)?.name ?? k)))
      lines.push(`index ${r.name}.${i.name} (${keys.join(', ')})${i.unique ? ' unique' : ''} ${i.shape}`)
    }
    for (const c of catalog.constraints.get(r.oid) ?? [])
      lines.push(`constraint ${r.name}.${c.name} ${strip(c.definition)}`)
    for (const p of catalog.policies.get(r.oid) ?? []) {
      lines.push(
        `policy ${r.name}.${p.name} ${p.cmd} ${p.permissive ? 'permissive' : 'restrictive'} ${strip(p.qual ?? '')} ${strip(p.withCheck ?? '')}`,
      )
    }
  }
  return lines.sort()
}

/**
 * The tenant schemas whose fingerprint (a hash of their lines) differs from the most common one; each
 * finding lists what is missing and what is extra against that reference.
 */
export function driftFindings(catalog: Catalog, tenantSchemas: readonly string[], prefix: string): Finding[] {
  const bySchema = new Map<string, { hash: string; lines: string[] }>()
  const counts = new Map<string, number>()
  // Relations grouped once: a fleet of 500 schemas must not scan every relation 500 times.
  const relationsOf = new Map<string, Relation[]>()
  for (const r of catalog.relations) {
    const list = relationsOf.get(r.schema) ?? []
    if (list.length === 0) relationsOf.set(r.schema, list)
    list.push(r)
  }
  for (const s of tenantSchemas) {
    const lines = schemaLines(catalog, s, relationsOf.get(s) ?? [])
    const hash = createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16)
    bySchema.set(s, { hash, lines })
    counts.set(hash, (counts.get(hash) ?? 0) + 1)
  }
  if (counts.size <= 1) return []
  // The reference: the most common fingerprint; on a tie, the one of the first schema in name order.
  const ordered = [...bySchema.entries()].sort(([a], [b]) => (a < b ? -1 : 1))
  let reference = ordered[0]![1]
  for (const [, v] of ordered) if (counts.get(v.hash)! > counts.get(reference.hash)!) reference = v
  const refSchema = ordered.find(([, v]) => v.hash === reference.hash)![0]
  const refSet = new Set(reference.lines)
  const out: Finding[] = []
  for (const [schema, v] of ordered) {
    if (v.hash === reference.hash) continue
    const own = new Set(v.lines)
    const missing = reference.lines.filter((l) => !own.has(l))
    const extra = v.lines.filter((l) => !refSet.has(l))
    const show = (l: string[]) => l.slice(0, 5).join('; ') + (l.length > 5 ? `; … ${l.length - 5} more` : '')
    out.push(
      finding(
        'schema-drift',
        prefix + schema,
        `Tenant schema ${schema} (fingerprint ${v.hash}) differs from ${counts.get(reference.hash)} schema(s) like ${refSchema} (${reference.hash}): ${missing.length > 0 ? `missing ${show(missing)}` : ''}${missing.length > 0 && extra.length > 0 ? '; ' : ''}${extra.length > 0 ? `extra ${show(extra)}` : ''}. Code written against the others may fail or skip a constraint or policy for this tenant.`,
        `Re-apply the tenant migrations to ${schema} (keel migrate status / up) or bring it in line by hand: add what is missing, drop what is extra.`,
      ),
    )
  }
  return out
}
