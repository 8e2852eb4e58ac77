/**
 * keel doctor at fleet size (issue #16): 500 tenant schemas x 20 tables (10,000 tables, each with a
 * composite primary key, an index, a foreign key and keel's forced RLS policy), inspected in schema mode
 * (the catalog fingerprint of every schema) and in rls mode (every rule over 10,000 tenant tables), with
 * and without the live probe. One schema is left drifted so the fingerprint has something to find.
 * Writes bench/results/issue-16-doctor.{json,md}. A benchmark, not a test: it never fails on timings.
 *
 *   node bench/dist/doctor.js        BENCH_DOCTOR_SCHEMAS (500), BENCH_DOCTOR_TABLES (20), BENCH_ROUNDS (3),
 *   BENCH_DOCTOR_PROBE_ROUNDS (1)
 */
import { doctor } from '@keel/migrate'
import pg from 'pg'
import { envNumber } from './lib/env.js'
import { loadNote, type MachineMeta, machineMeta } from './lib/machine.js'
import { fmt, fmtInt, markdownTable } from './lib/report.js'
import { writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack } from './lib/stack.js'
import { median } from './lib/stats.js'

const schemas = Math.round(envNumber('BENCH_DOCTOR_SCHEMAS', 500))
const tablesPer = Math.round(envNumber('BENCH_DOCTOR_TABLES', 20))
const rounds = Math.round(envNumber('BENCH_ROUNDS', 3))
// The probe touches every table (about a minute at this size): one round unless asked.
const probeRounds = Math.round(envNumber('BENCH_DOCTOR_PROBE_ROUNDS', 1))
const DB = 'keel_doctor_bench'

interface Row {
  scenario: string
  tables: number
  medianS: number
  minS: number
  findings: number
  heapMiB: number
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

async function exec(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

function schemaSql(s: string): string {
  const out = [`CREATE SCHEMA ${s}; GRANT USAGE ON SCHEMA ${s} TO keel_app;`]
  for (let i = 0; i < tablesPer; i++) {
    const t = `${s}.t${i}`
    const p = 'tenant_id = (SELECT public.keel_current_tenant())'
    out.push(`CREATE TABLE ${t} (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, parent_id bigint,
      name text, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id)
      ${i > 0 ? `, FOREIGN KEY (tenant_id, parent_id) REFERENCES ${s}.t0 (tenant_id, id)` : ''});
      CREATE INDEX ON ${t} (tenant_id, created_at);
      ALTER TABLE ${t} ENABLE ROW LEVEL SECURITY; ALTER TABLE ${t} FORCE ROW LEVEL SECURITY;
      CREATE POLICY keel_tenant_isolation ON ${t} FOR ALL USING (${p}) WITH CHECK (${p});`)
  }
  out.push(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO keel_app;`)
  return out.join('\n')
}

async function build(superUrl: string, ownerUrl: string): Promise<number> {
  const started = performance.now()
  await exec(superUrl, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
  await exec(superUrl, `CREATE DATABASE ${DB} OWNER keel_owner`)
  await exec(
    withDatabase(superUrl, DB),
    'ALTER SCHEMA public OWNER TO keel_owner; GRANT CONNECT ON DATABASE keel_doctor_bench TO keel_app; GRANT USAGE ON SCHEMA public TO keel_app',
  )
  const owner = withDatabase(ownerUrl, DB)
  await exec(
    owner,
    `CREATE FUNCTION public.keel_current_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
       AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '') $$`,
  )
  const names = Array.from({ length: schemas }, (_, i) => `tenant_${String(i).padStart(4, '0')}`)
  // Two connections: the machine has two cores, and DDL is mostly catalog writes.
  let next = 0
  const worker = async () => {
    const client = new pg.Client({ connectionString: owner })
    await client.connect()
    try {
      while (next < names.length) {
        const s = names[next++]!
        await client.query(schemaSql(s))
      }
    } finally {
      await client.end()
    }
  }
  await Promise.all([worker(), worker()])
  // One schema missed a migration: the fingerprint must find it among 500.
  await exec(owner, `DROP INDEX ${names[schemas - 1]}.t${tablesPer - 1}_tenant_id_created_at_idx`)
  return (performance.now() - started) / 1_000
}

async function measure(
  scenario: string,
  n: number,
  run: () => Promise<{ findings: unknown[]; checked: { tables: number } }>,
): Promise<Row> {
  const times: number[] = []
  let findings = 0
  let tables = 0
  let heap = 0
  for (let i = 0; i < n; i++) {
    const started = performance.now()
    const result = await run()
    times.push((performance.now() - started) / 1_000)
    findings = result.findings.length
    tables = result.checked.tables
    heap = Math.max(heap, process.memoryUsage().heapUsed / 2 ** 20)
    console.log(`  ${scenario}: round ${i + 1} ${times.at(-1)!.toFixed(2)} s, ${findings} finding(s)`)
  }
  return { scenario, tables, medianS: median(times), minS: Math.min(...times), findings, heapMiB: heap }
}

async function main(): Promise<void> {
  const stack = readStack()
  const meta: MachineMeta = machineMeta()
  console.log(`building ${schemas} schemas x ${tablesPer} tables in ${DB} ...`)
  const buildS = await build(stack.primary.superUrl, stack.primary.ownerUrl)
  console.log(`built in ${buildS.toFixed(1)} s`)
  const connection = withDatabase(stack.primary.ownerUrl, DB)
  const runtimeConnection = withDatabase(stack.primary.url, DB)
  const rows: Row[] = []
  try {
    rows.push(
      await measure('schema mode: fingerprint of every tenant schema', rounds, () =>
        doctor({ connection, runtimeRole: 'keel_app', tenancy: { mode: 'schema', sharedSchemas: [] } }),
      ),
    )
    rows.push(
      await measure('rls mode: every catalog rule, no probe', rounds, () =>
        doctor({ connection, runtimeRole: 'keel_app', probe: false }),
      ),
    )
    rows.push(
      await measure('rls mode: every rule + the live probe (rolled back)', probeRounds, () =>
        doctor({ connection, runtimeRole: 'keel_app', runtimeConnection }),
      ),
    )
  } finally {
    await exec(stack.primary.superUrl, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`)
  }
  const table = markdownTable(
    ['scenario', 'tables', 'median s', 'min s', 'findings', 'heap MiB'],
    rows.map((r) => [
      r.scenario,
      fmtInt(r.tables),
      fmt(r.medianS),
      fmt(r.minS),
      String(r.findings),
      fmt(r.heapMiB, 0),
    ]),
    [false, true, true, true, true, true],
  )
  const markdown = `${schemas} tenant schemas x ${tablesPer} tables (${fmtInt(schemas * tablesPer)} tables, each with a composite
primary key, an index, a foreign key and keel's forced policy) on the local stack's primary, built in
${fmt(buildS, 1)} s. ${rounds} rounds each (the probe: ${probeRounds}), one doctor run at a time, over loopback. The catalog is read in a fixed
number of set-based queries whatever the fleet size; the probe costs two to four round trips per tenant
table, in rolled-back transactions of 100 tables.
The schema-mode run finds the one drifted schema (a dropped index); the rls runs find nothing (the
\`tenant_*\` schemas all hold well-formed tenant tables). Machine: ${meta.cpuModel}, ${meta.cores} cores, load
${meta.loadAverage.join(' / ')} at the start; ${loadNote(meta)}.

${table}
`
  const written = writeResults(
    'issue-16-doctor',
    'keel doctor at fleet size (issue #16)',
    { meta, buildS, rows },
    markdown,
  )
  console.log(`\n${table}\n\nwrote ${written.join(', ')}`)
}

runMain(main)
