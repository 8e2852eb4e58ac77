import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { applyRlsPolicy } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, readStack, runCli, uniquePrefix } from './support.js'

// `keel export` as an operator runs it: the built bin, a keel.config.mjs (rls tenancy, the owner
// connection for migrations) and the app's runtime role for the read.
const prefix = uniquePrefix('x')
const table = `${prefix}_exp_items`
const notes = `${prefix}_exp_notes`
const project = mkdtempSync(join(tmpdir(), 'keel-export-cli-'))
const noEnv = { KEEL_MIGRATE_URL: '', DATABASE_URL: '', KEEL_EXPORT_URL: '' }
const ROWS = 20_000

beforeAll(async () => {
  const owner = await connect('owner')
  try {
    for (const t of [table, notes]) {
      await owner.query(`DROP TABLE IF EXISTS ${t}`)
      await owner.query(
        `CREATE TABLE ${t} (tenant_id text NOT NULL, id int NOT NULL, note text, PRIMARY KEY (tenant_id, id))`,
      )
      await applyRlsPolicy(owner, { table: t })
    }
  } finally {
    await owner.end()
  }
  const su = await connect('super')
  try {
    await su.query(`INSERT INTO ${table} SELECT 'acme', g, 'item ' || g FROM generate_series(1, ${ROWS}) g`)
    await su.query(`INSERT INTO ${table} SELECT 'globex', g, 'not yours' FROM generate_series(1, 500) g`)
    await su.query(
      `INSERT INTO ${notes} VALUES ('acme', 1, 'a, "quoted"' || chr(10) || 'note'), ('globex', 1, 'x')`,
    )
  } finally {
    await su.end()
  }
  writeFileSync(
    join(project, 'keel.config.mjs'),
    `export default {
  connection: { connectionString: ${JSON.stringify(readStack().primary.ownerUrl)} },
  tenancy: { mode: 'rls' },
  exportConnection: { connectionString: ${JSON.stringify(readStack().primary.url)} },
}
`,
  )
}, 120_000)

afterAll(async () => {
  const owner = await connect('owner')
  for (const t of [table, notes]) await owner.query(`DROP TABLE IF EXISTS ${t}`)
  await owner.end()
})

describe('keel export', () => {
  it("writes exactly the tenant's rows of each table as ndjson, atomically", async () => {
    const out = join(project, 'acme.ndjson')
    const run = await runCli(
      ['export', '--tenant', 'acme', '--tables', `${table},${notes}`, '--format', 'ndjson', '--out', out],
      { cwd: project, env: noEnv },
    )
    expect(run.stderr).toMatch(new RegExp(`${ROWS + 1} rows of`))
    expect(run.code).toBe(0)
    const lines = readFileSync(out, 'utf8').trimEnd().split('\n')
    expect(lines.length).toBe(ROWS + 1)
    const parsed = lines.map(
      (l) => JSON.parse(l) as { table: string; row: { tenant_id: string; id: number } },
    )
    expect(parsed.every((l) => l.row.tenant_id === 'acme')).toBe(true)
    expect(new Set(parsed.filter((l) => l.table === table).map((l) => l.row.id)).size).toBe(ROWS)
    expect(parsed.at(-1)).toEqual({
      table: notes,
      row: { tenant_id: 'acme', id: 1, note: 'a, "quoted"\nnote' },
    })
    expect(readdirSync(project).filter((f) => f.endsWith('.part'))).toEqual([])
  }, 60_000)

  it('writes csv for one table to stdout', async () => {
    const run = await runCli(
      ['export', '--tenant', 'acme', '--tables', notes, '--format', 'csv', '--out', '-', '--quiet'],
      { cwd: project, env: noEnv },
    )
    expect(run.code).toBe(0)
    expect(run.stdout).toBe('tenant_id,id,note\nacme,1,"a, ""quoted""\nnote"\n')
    expect(run.stderr).toBe('')
    // Paced: the same bytes.
    const paced = await runCli(
      [
        'export',
        '--tenant',
        'acme',
        '--tables',
        notes,
        '--format',
        'csv',
        '--out',
        '-',
        '--quiet',
        '--max-rows-per-second',
        '1000',
      ],
      { cwd: project, env: noEnv },
    )
    expect(paced.code).toBe(0)
    expect(paced.stdout).toBe(run.stdout)
  })

  it('refuses without the runtime role, and reports bad input with a stable code (no file written)', async () => {
    const noUrlProject = mkdtempSync(join(tmpdir(), 'keel-export-cli-nourl-'))
    writeFileSync(
      join(noUrlProject, 'keel.config.mjs'),
      `export default { connection: { connectionString: ${JSON.stringify(readStack().primary.ownerUrl)} }, tenancy: { mode: 'rls' } }\n`,
    )
    const out = join(project, 'nope.ndjson')
    const noUrl = await runCli(['export', '--tenant', 'acme', '--tables', table, '--out', out], {
      cwd: noUrlProject,
      env: noEnv,
    })
    expect(noUrl.code).toBe(1)
    expect(noUrl.stderr).toMatch(/KEEL_MIGRATE_CONFIG_INVALID: keel export reads as the app's runtime role/)
    const badTable = await runCli(['export', '--tenant', 'acme', '--tables', 'public.x', '--out', out], {
      cwd: project,
      env: noEnv,
    })
    expect(badTable.code).toBe(1)
    expect(badTable.stderr).toMatch(/KEEL_QUERY_INVALID/)
    const badFormat = await runCli(
      ['export', '--tenant', 'acme', '--tables', table, '--format', 'xml', '--out', out],
      { cwd: project, env: noEnv },
    )
    expect(badFormat.code).toBe(1)
    expect(badFormat.stderr).toMatch(/KEEL_QUERY_INVALID: keel export: --format/)
    const badPace = await runCli(
      ['export', '--tenant', 'acme', '--tables', table, '--out', out, '--max-rows-per-second', '0'],
      { cwd: project, env: noEnv },
    )
    expect(badPace.code).toBe(1)
    expect(badPace.stderr).toMatch(/KEEL_QUERY_INVALID: keel export: --max-rows-per-second/)
    const badTenant = await runCli(['export', '--tenant', "a'b", '--tables', table, '--out', out], {
      cwd: project,
      env: noEnv,
    })
    expect(badTenant.code).toBe(1)
    expect(badTenant.stderr).toMatch(/KEEL_TENANT_INVALID/)
    const missingTable = await runCli(
      ['export', '--tenant', 'acme', '--tables', `${prefix}_no_such`, '--out', out],
      { cwd: project, env: noEnv },
    )
    expect(missingTable.code).toBe(1)
    expect(missingTable.stderr).toMatch(/does not exist/)
    expect(existsSync(out)).toBe(false)
    expect(readdirSync(project).filter((f) => f.endsWith('.part'))).toEqual([])
  }, 60_000)
})
