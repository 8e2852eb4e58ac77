import type { Catalog, Column, Relation } from './catalog.js'

/** A table the doctor treats as tenant data: it has the tenant column (or its declared one). */
export interface TenantTable {
  relation: Relation
  column: Column
  display: string
}

export interface TableSplit {
  tenant: TenantTable[]
  /** Tables without the tenant column that sharedTables does not name. */
  undeclared: Relation[]
  byOid: Map<number, TenantTable>
}

export function splitTables(
  catalog: Catalog,
  tenantColumn: string,
  tenantColumns: Record<string, string>,
  sharedTables: readonly string[],
): TableSplit {
  const shared = new Set(sharedTables)
  const tenant: TenantTable[] = []
  const undeclared: Relation[] = []
  const byOid = new Map<number, TenantTable>()
  for (const relation of catalog.relations) {
    if (relation.kind !== 'r' && relation.kind !== 'p') continue
    const display = `${relation.schema}.${relation.name}`
    const columnName = tenantColumns[display] ?? tenantColumns[relation.name] ?? tenantColumn
    const column = catalog.columns.get(relation.oid)?.find((c) => c.name === columnName)
    if (column !== undefined) {
      const t = { relation, column, display }
      tenant.push(t)
      byOid.set(relation.oid, t)
    } else if (!shared.has(display) && !shared.has(relation.name)) {
      undeclared.push(relation)
    }
  }
  return { tenant, undeclared, byOid }
}
