import type { Catalog } from './catalog.js'
import { isKeelOwnIndex } from './object-checks.js'
import { type Finding, finding } from './rules.js'
import { ident, qualified } from './sql-names.js'
import type { TableSplit, TenantTable } from './tenant-tables.js'

function columnName(catalog: Catalog, rel: number, num: number): string {
  return (
    catalog.columns.get(rel)?.find((c) => c.num === num)?.name ?? (num === 0 ? '(expression)' : `#${num}`)
  )
}

export function keyFindings(catalog: Catalog, split: TableSplit, prefix: string): Finding[] {
  const out: Finding[] = []
  for (const t of split.tenant) {
    out.push(...foreignKeys(catalog, split, t, prefix), ...indexes(catalog, t, prefix))
  }
  return out
}

function foreignKeys(catalog: Catalog, split: TableSplit, t: TenantTable, prefix: string): Finding[] {
  const out: Finding[] = []
  for (const c of catalog.constraints.get(t.relation.oid) ?? []) {
    if (c.type !== 'f' || c.refRelation === null) continue
    const parent = split.byOid.get(c.refRelation)
    if (parent === undefined) continue // a shared parent (plans, countries) is fine
    const at = c.keys.indexOf(t.column.num)
    if (at >= 0 && c.refKeys[at] === parent.column.num) continue
    const cols = c.keys.map((k) => columnName(catalog, t.relation.oid, k))
    const refCols = c.refKeys.map((k) => columnName(catalog, parent.relation.oid, k))
    const table = qualified(t.relation.schema, t.relation.name)
    out.push(
      finding(
        'foreign-key-without-tenant',
        `${prefix}${t.display}:${c.name}`,
        `Foreign key ${c.name} (${cols.join(', ')}) -> ${parent.display} (${refCols.join(', ')}) does not pair the tenant columns: foreign-key checks bypass row level security, so a row of one tenant can point at another tenant's row (and learn that it exists).`,
        `ALTER TABLE ${table} DROP CONSTRAINT ${ident(c.name)}, ADD CONSTRAINT ${ident(c.name)} FOREIGN KEY (${[t.column.name, ...cols.filter((x) => x !== t.column.name)].map(ident).join(', ')}) REFERENCES ${qualified(parent.relation.schema, parent.relation.name)} (${[parent.column.name, ...refCols.filter((x) => x !== parent.column.name)].map(ident).join(', ')});  -- needs UNIQUE (${parent.column.name}, ...) on the parent`,
      ),
    )
  }
  return out
}

function recreate(
  t: TenantTable,
  name: string,
  columns: string[],
  unique: boolean,
  expressions: boolean,
): string {
  const index = qualified(t.relation.schema, name)
  const table = qualified(t.relation.schema, t.relation.name)
  if (expressions)
    return `Recreate ${index} with ${ident(t.column.name)} as its first key (its other keys are expressions: keep them).`
  return `DROP INDEX CONCURRENTLY ${index}; CREATE ${unique ? 'UNIQUE ' : ''}INDEX CONCURRENTLY ${ident(name)} ON ${table} (${columns.map(ident).join(', ')});`
}

function indexes(catalog: Catalog, t: TenantTable, prefix: string): Finding[] {
  const out: Finding[] = []
  const table = qualified(t.relation.schema, t.relation.name)
  for (const i of catalog.indexes.get(t.relation.oid) ?? []) {
    const cols = i.keys.map((k) => columnName(catalog, t.relation.oid, k))
    const name = i.constraint ?? i.name
    const object = `${prefix}${t.display}:${name}`
    if (i.unique && !i.keys.includes(t.column.num)) {
      const what = i.primary ? 'primary key' : i.constraint !== null ? 'unique constraint' : 'unique index'
      const fix =
        i.constraint !== null
          ? `ALTER TABLE ${table} DROP CONSTRAINT ${ident(i.constraint)}, ADD CONSTRAINT ${ident(i.constraint)} ${i.primary ? 'PRIMARY KEY' : 'UNIQUE'} (${[t.column.name, ...cols].map(ident).join(', ')});`
          : recreate(t, i.name, [t.column.name, ...cols], true, i.hasExpressions)
      out.push(
        finding(
          'unique-without-tenant',
          object,
          `The ${what} ${name} (${cols.join(', ')}) on ${t.display} is global: an insert that collides with another tenant's row fails with 23505, telling the caller that the value exists elsewhere, and one tenant's value blocks every other tenant from using it.`,
          fix,
        ),
      )
      continue
    }
    if (i.keys[0] === t.column.num || isKeelOwnIndex(i.name)) continue
    const what = i.primary ? 'primary key' : 'index'
    out.push(
      finding(
        'index-not-leading-tenant',
        object,
        `The ${what} ${name} (${cols.join(', ')}) on ${t.display} does not lead with ${t.column.name}: every query is tenant-scoped, so lookups scan other tenants' entries too (or the planner skips the index).`,
        i.constraint !== null
          ? `ALTER TABLE ${table} DROP CONSTRAINT ${ident(i.constraint)}, ADD CONSTRAINT ${ident(i.constraint)} ${i.primary ? 'PRIMARY KEY' : 'UNIQUE'} (${[t.column.name, ...cols.filter((c) => c !== t.column.name)].map(ident).join(', ')});`
          : recreate(
              t,
              i.name,
              [t.column.name, ...cols.filter((c) => c !== t.column.name)],
              i.unique,
              i.hasExpressions,
            ),
      ),
    )
  }
  return out
}
