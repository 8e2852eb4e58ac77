import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import { type Finding, finding } from './rules.js'
import { ident, literal, qualified } from './sql-names.js'
import type { TenantTable } from './tenant-tables.js'

export interface ProbeResult {
  findings: Finding[]
  tables: number
  /** Tables where a probe step ended in an error that proves nothing (timeout, a trigger's error). */
  inconclusive: string[]
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

/**
 * One probe step in one round trip on success: savepoint, the tenant setting and the statement as one
 * simple-protocol batch (the values are the doctor's own synthetic ids and a validated setting name,
 * quoted as literals); a failure costs one more, the rollback to the savepoint.
 */
async function attempt(
  client: pg.ClientBase,
  setting: string,
  tenant: string,
  statement: string,
): Promise<{ rows: number; code?: string }> {
  const batch = `SAVEPOINT keel_doctor_probe; SELECT set_config(${literal(setting)}, ${literal(tenant)}, true); ${statement}; RELEASE SAVEPOINT keel_doctor_probe`
  try {
    const results = (await client.query(batch)) as unknown as pg.QueryResult[]
    const r = results[2]!
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
 * tenant), and A's insert of a row for B must fail with 42501, as must the same insert with the setting
 * empty. Short lock and statement timeouts keep
 * it from queueing behind production traffic.
 */
export async function runProbe(
  client: pg.ClientBase,
  options: { setRole?: string; runtimeRole: string; setting: string; prefix: string },
  tables: readonly TenantTable[],
): Promise<ProbeResult> {
  const out: Finding[] = []
  const inconclusive: string[] = []
  let probed = 0
  // One transaction per batch: a single one over a whole fleet runs out of lock slots
  // (max_locks_per_transaction) after a few thousand tables; each batch is rolled back like the rest.
  for (let start = 0; start < tables.length; start += BATCH) {
    await client.query('BEGIN')
    try {
      await client.query("SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '30s'")
      if (options.setRole !== undefined) await client.query(`SET LOCAL ROLE ${ident(options.setRole)}`)
      for (const t of tables.slice(start, start + BATCH)) {
        const verdict = await probeTable(client, options, t)
        if (verdict === undefined) continue
        probed++
        out.push(...verdict.findings)
        if (verdict.inconclusive) inconclusive.push(options.prefix + t.display)
      }
    } finally {
      await client.query('ROLLBACK').catch(() => undefined)
    }
  }
  return { findings: out, tables: probed, inconclusive }
}

const BATCH = 100

async function probeTable(
  client: pg.ClientBase,
  options: { runtimeRole: string; setting: string; prefix: string },
  t: TenantTable,
): Promise<{ findings: Finding[]; inconclusive: boolean } | undefined> {
  const a = syntheticId(t.column.type, 'a')
  const b = syntheticId(t.column.type, 'b')
  if (a === undefined || b === undefined) return undefined
  const out: Finding[] = []
  let inconclusive = false
  const table = qualified(t.relation.schema, t.relation.name)
  const object = options.prefix + t.display
  const insert = `INSERT INTO ${table} (${ident(t.column.name)}) VALUES (${literal(b)}::${t.column.type})`
  const s = options.setting
  if (t.relation.runtimeInsert) {
    await attempt(client, s, b, insert)
    const cross = await attempt(client, s, a, insert)
    // With the setting empty, as on a pooled connection that lost its tenant: an insert must fail too.
    const blank = await attempt(client, s, '', insert)
    // Postgres checks WITH CHECK before NOT NULL and CHECK constraints: success, or an integrity error
    // (class 23) after it, means the row got past row level security. Any other error (a lock or
    // statement timeout, a trigger's own error) proves nothing either way.
    const passed = (code: string | undefined) => code === undefined || code.startsWith('23')
    const how = (code: string | undefined) =>
      code === undefined ? 'succeeded' : `got past row level security (it failed later, with ${code})`
    if (passed(cross.code) || passed(blank.code)) {
      const who = passed(cross.code)
        ? `scoped to synthetic tenant A, inserting a row for tenant B into ${t.display} ${how(cross.code)}`
        : `with ${s} empty (no tenant), inserting a row for tenant B into ${t.display} ${how(blank.code)}`
      out.push(
        finding(
          'probe-cross-tenant-insert',
          object,
          `As ${options.runtimeRole} ${who}: the WITH CHECK side of its policies lets a statement write another tenant's rows.`,
          `Give the policy a WITH CHECK that compares ${t.column.name} with the setting: WITH CHECK (${ident(t.column.name)} = (SELECT public.keel_current_tenant()))`,
        ),
      )
    } else if (cross.code !== '42501' || blank.code !== '42501') {
      inconclusive = true
    }
  }
  if (t.relation.runtimeSelect) {
    const read = `SELECT 1 FROM ${table} LIMIT 1`
    const asA = await attempt(client, s, a, read)
    const unset = await attempt(client, s, '', read)
    if (asA.code !== undefined || unset.code !== undefined) inconclusive = true
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
  return { findings: out, inconclusive }
}
