import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import { type Finding, finding } from './rules.js'
import { ident, qualified } from './sql-names.js'
import type { TenantTable } from './tenant-tables.js'

export interface ProbeResult {
  findings: Finding[]
  tables: number
}

/** A synthetic tenant id of the column's type that no real tenant has; undefined: a type the probe skips. */
function syntheticId(type: string, which: 'a' | 'b'): string | undefined {
  if (type === 'uuid') return randomUUID()
  if (/^(text|character varying|varchar|character)/.test(type))
    return `keel-doctor-${which}-${randomUUID().slice(0, 8)}`
  if (/^(bigint|integer|smallint|numeric)/.test(type)) {
    const n = Math.floor(Math.random() * 10_000) + 1
    return String(type === 'smallint' ? -n : -(n * 100_000 + (which === 'a' ? 1 : 2)))
  }
  return undefined
}

async function attempt(
  client: pg.ClientBase,
  text: string,
  values: unknown[],
): Promise<{ rows: number; code?: string }> {
  await client.query('SAVEPOINT keel_doctor_probe')
  try {
    const r = await client.query(text, values)
    await client.query('RELEASE SAVEPOINT keel_doctor_probe')
    return { rows: r.rowCount ?? r.rows.length }
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT keel_doctor_probe')
    return { rows: 0, code: (error as { code?: string }).code ?? 'unknown' }
  }
}

/**
 * The live probe, as the runtime role, in one transaction that is always rolled back: for each tenant
 * table, tenant B inserts a row of its own (where the table's defaults allow a row with only the
 * tenant column); then tenant A, which owns no rows, must read none (nor may a statement without a
 * tenant), and A's insert of a row for B must fail with 42501. Short lock and statement timeouts keep
 * it from queueing behind production traffic.
 */
export async function runProbe(
  client: pg.ClientBase,
  options: { setRole?: string; runtimeRole: string; setting: string; prefix: string },
  tables: readonly TenantTable[],
): Promise<ProbeResult> {
  const out: Finding[] = []
  let probed = 0
  await client.query('BEGIN')
  try {
    await client.query("SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '30s'")
    if (options.setRole !== undefined) await client.query(`SET LOCAL ROLE ${ident(options.setRole)}`)
    const setTenant = (v: string) => client.query('SELECT set_config($1, $2, true)', [options.setting, v])
    for (const t of tables) {
      const a = syntheticId(t.column.type, 'a')
      const b = syntheticId(t.column.type, 'b')
      if (a === undefined || b === undefined) continue
      probed++
      const table = qualified(t.relation.schema, t.relation.name)
      const object = options.prefix + t.display
      const insert = `INSERT INTO ${table} (${ident(t.column.name)}) VALUES ($1::${t.column.type})`
      if (t.relation.runtimeInsert) {
        await setTenant(b)
        await attempt(client, insert, [b])
        await setTenant(a)
        const cross = await attempt(client, insert, [b])
        if (cross.code !== '42501') {
          out.push(
            finding(
              'probe-cross-tenant-insert',
              object,
              `As ${options.runtimeRole} scoped to synthetic tenant A, inserting a row for tenant B into ${t.display} ${cross.code === undefined ? 'succeeded' : `got past row level security (it failed later, with ${cross.code})`}: the WITH CHECK side of its policies lets a tenant write another tenant's rows.`,
              `Give the policy a WITH CHECK that compares ${t.column.name} with the setting: WITH CHECK (${ident(t.column.name)} = (SELECT public.keel_current_tenant()))`,
            ),
          )
        }
      }
      if (t.relation.runtimeSelect) {
        const read = `SELECT 1 FROM ${table} LIMIT 1`
        await setTenant(a)
        const asA = await attempt(client, read, [])
        await setTenant('')
        const unset = await attempt(client, read, [])
        if (asA.rows > 0 || unset.rows > 0) {
          out.push(
            finding(
              'probe-cross-tenant-read',
              object,
              `As ${options.runtimeRole}, ${asA.rows > 0 ? 'synthetic tenant A (which owns no rows)' : 'a statement without a tenant'} read rows of ${t.display}: its policies admit other tenants' rows.`,
              `Make the USING side compare ${t.column.name} with the setting and nothing else: USING (${ident(t.column.name)} = (SELECT public.keel_current_tenant())); if another permissive policy must stay, make the tenant one AS RESTRICTIVE.`,
            ),
          )
        }
      }
    }
  } finally {
    await client.query('ROLLBACK').catch(() => undefined)
  }
  return { findings: out, tables: probed }
}
