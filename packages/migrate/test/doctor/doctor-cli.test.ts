import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanSchema, createDatabase, dropDatabase, run, stackUrls, uniqueSuffix, urlFor } from './fixture.js'

// The built bin, as CI and users run it (the build runs before the tests, as in .ci/run).
const cli = join(dirname(fileURLToPath(import.meta.url)), '../../dist/cli.js')
const id = uniqueSuffix()
const role = `doctor_cli_app_${id}`
const cleanDb = `doctor_cli_clean_${id}`
const dirtyDb = `doctor_cli_dirty_${id}`

function keel(args: string[], env: Record<string, string> = {}, cwd?: string) {
  const { KEEL_OWNER_URL: _a, DATABASE_URL: _b, ...rest } = process.env
  const r = spawnSync(process.execPath, [cli, ...args], {
    env: { ...rest, ...env },
    encoding: 'utf8',
    timeout: 60_000,
    ...(cwd === undefined ? {} : { cwd }),
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const flags = (db: string) => [
  '--runtime-role',
  role,
  '--runtime-url',
  urlFor(role, 'app', db),
  '--shared',
  'plans',
  '--tenant-columns',
  'tenants=id',
]

beforeAll(async () => {
  expect(existsSync(cli), 'build @keel/migrate first (pnpm -r run build)').toBe(true)
  await run(stackUrls().superUrl, `CREATE ROLE ${role} LOGIN PASSWORD 'app'`)
  await createDatabase(cleanDb, [role])
  await createDatabase(dirtyDb, [role])
  await run(urlFor('keel_owner', 'owner', cleanDb), cleanSchema(role))
  await run(
    urlFor('keel_owner', 'owner', dirtyDb),
    `${cleanSchema(role)}
     CREATE TABLE notes (tenant_id text NOT NULL, id bigint, body text, PRIMARY KEY (tenant_id, id));
     CREATE INDEX notes_body ON notes (body);`,
  )
})

afterAll(async () => {
  await dropDatabase(cleanDb)
  await dropDatabase(dirtyDb)
  await run(stackUrls().superUrl, `DROP ROLE IF EXISTS ${role}`)
})

describe('keel doctor (CLI)', () => {
  it('exits 0 on a clean database and says what it checked', () => {
    const r = keel(['doctor', '--connection', urlFor('keel_owner', 'owner', cleanDb), ...flags(cleanDb)])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('keel doctor: 0 error(s), 0 warning(s)')
    expect(r.stdout).toContain('probe ran on 3 table(s)')
  })

  it('exits 1 on an error, prints the rule, the fix and the doc page; --json is the API result', () => {
    const owner = urlFor('keel_owner', 'owner', dirtyDb)
    const text = keel(['doctor', ...flags(dirtyDb)], { KEEL_OWNER_URL: owner })
    expect(text.code).toBe(1)
    expect(text.stdout).toContain('ERROR   rls-disabled  public.notes')
    expect(text.stdout).toContain('fix: ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;')
    expect(text.stdout).toContain('see: docs/doctor/rls-disabled.md')
    const json = keel(['doctor', '--json', ...flags(dirtyDb)], { DATABASE_URL: owner })
    expect(json.code).toBe(1)
    const result = JSON.parse(json.stdout) as {
      findings: Array<{ rule: string; severity: string; object: string }>
    }
    expect(result.findings.map((f) => [f.rule, f.severity, f.object])).toEqual([
      ['rls-disabled', 'error', 'public.notes'],
      ['index-not-leading-tenant', 'warning', 'public.notes:notes_body'],
    ])
  })

  it('warnings alone exit 0, and 1 with --strict; --ignore accepts a finding', () => {
    const args = ['doctor', '--connection', urlFor('keel_owner', 'owner', dirtyDb), ...flags(dirtyDb)]
    expect(keel([...args, '--ignore', 'rls-disabled:public.notes']).code).toBe(0)
    expect(keel([...args, '--ignore', 'rls-disabled:public.notes', '--strict']).code).toBe(1)
    expect(keel([...args, '--ignore', 'rls-disabled,index-not-leading-tenant', '--strict']).code).toBe(0)
  })

  it('reads keel.config.mjs from the working directory (its doctor key); flags override it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-doctor-'))
    writeFileSync(
      join(dir, 'keel.config.mjs'),
      `export default { doctor: { runtimeRole: '${role}', sharedTables: ['plans'], tenantColumns: { tenants: 'id' },
         runtimeConnection: '${urlFor(role, 'app', cleanDb)}' } }\n`,
    )
    const r = keel(['doctor', '--json'], { KEEL_OWNER_URL: urlFor('keel_owner', 'owner', cleanDb) }, dir)
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ findings: [], probe: { ran: true } })
    // --shared replaces the config's list: plans is then an undeclared table.
    const over = keel(
      ['doctor', '--json', '--shared', 'nothing'],
      { KEEL_OWNER_URL: urlFor('keel_owner', 'owner', cleanDb) },
      dir,
    )
    expect(over.code).toBe(1)
    expect(JSON.parse(over.stdout).findings.map((f: { rule: string }) => f.rule)).toEqual([
      'table-not-tenant-scoped',
    ])
  })

  it('refuses a --mode it does not know, and database mode without a config file', () => {
    const args = ['doctor', '--connection', urlFor('keel_owner', 'owner', cleanDb), ...flags(cleanDb)]
    const typo = keel([...args, '--mode', 'sheme'])
    expect(typo.code).toBe(2)
    expect(typo.stderr).toContain('KEEL_DOCTOR_CONFIG_INVALID: --mode must be rls, schema or database')
    const database = keel([...args, '--mode', 'database'])
    expect(database.code).toBe(2)
    expect(database.stderr).toContain('needs a keel.config.mjs')
  })

  it('database mode from keel.config.mjs: tenancy.resolve and the fleet come from the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-doctor-db-'))
    writeFileSync(
      join(dir, 'keel.config.mjs'),
      `const urls = { clean: '${urlFor(role, 'app', cleanDb)}', dirty: '${urlFor(role, 'app', dirtyDb)}' }
export default {
  tenancy: { mode: 'database', resolve: async (t) => (urls[t] ? { primary: { connectionString: urls[t] }, isolation: 'rls' } : null) },
  doctor: { runtimeRole: '${role}', tenants: ['clean', 'dirty'], sharedTables: ['plans'], tenantColumns: { tenants: 'id' } },
}
`,
    )
    const r = keel(['doctor', '--json', '--mode', 'database'], { KEEL_OWNER_URL: stackUrls().ownerUrl }, dir)
    expect(r.stderr).toBe('')
    expect(r.code).toBe(1)
    const result = JSON.parse(r.stdout) as {
      findings: Array<{ rule: string; object: string }>
      checked: object
    }
    expect(result.findings.map((f) => [f.rule, f.object])).toEqual([
      ['rls-disabled', `${dirtyDb}/public.notes`],
      ['index-not-leading-tenant', `${dirtyDb}/public.notes:notes_body`],
    ])
    expect(result.checked).toMatchObject({ databases: 2 })
  })

  it('exits 2 when it cannot run, without printing the password', () => {
    const { host, port } = stackUrls()
    const bad = keel([
      'doctor',
      '--connection',
      `postgres://keel_owner:s3cret-pw@${host}:${port}/nope_${id}`,
      '--runtime-role',
      role,
    ])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('keel doctor could not run')
    expect(bad.stderr).not.toContain('s3cret-pw')
    const none = keel(['doctor', '--runtime-role', role])
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('KEEL_DOCTOR_CONFIG_INVALID')
  })
})
