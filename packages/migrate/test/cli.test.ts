import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { connect, dropFleet, readStack, runCli, uniquePrefix } from './support.js'

// The `keel` bin as a user runs it: a keel.config.mjs in the project folder, no environment needed.
const prefix = uniquePrefix('c')
const tenant = `${prefix}acme`
const project = mkdtempSync(join(tmpdir(), 'keel-cli-'))
const noEnv = {
  KEEL_MIGRATE_URL: '',
  DATABASE_URL: '',
  KEEL_TENANTS: '',
  KEEL_TENANCY_MODE: '',
  KEEL_MIGRATIONS_DIR: '',
}

writeFileSync(
  join(project, 'keel.config.mjs'),
  `export default {
  connection: { connectionString: ${JSON.stringify(readStack().primary.ownerUrl)} },
  dir: './db/migrations',
  tenancy: { mode: 'schema', schemaFor: (id) => 'tenant_' + id },
  tenants: async () => [${JSON.stringify(tenant)}],
  lockTimeoutMs: 300,
}
`,
)

afterAll(async () => {
  await dropFleet([`tenant_${tenant}`])
  const owner = await connect('owner')
  await owner.query(`DROP TABLE IF EXISTS ${prefix}_plans`)
  await owner.query("DELETE FROM keel_migrate.ledger WHERE scope = 'shared' AND id = $1", [
    `0001_plans_${prefix}`,
  ])
  await owner.end()
})

describe('keel CLI', () => {
  it('migrate new numbers files in shared/ and tenant/', async () => {
    const a = await runCli(['migrate', 'new', 'Create notes'], { cwd: project, env: noEnv })
    expect(a.code).toBe(0)
    expect(a.stdout.trim()).toBe(join('db/migrations/tenant/0001_create_notes.sql'))
    const b = await runCli(['migrate', 'new', 'notes body index'], { cwd: project, env: noEnv })
    expect(b.stdout.trim()).toBe(join('db/migrations/tenant/0002_notes_body_index.sql'))
    // Shared ids live in the stack's one shared ledger: unique per run.
    const c = await runCli(['migrate', 'new', '--shared', `plans ${prefix}`], { cwd: project, env: noEnv })
    expect(c.stdout.trim()).toBe(join(`db/migrations/shared/0001_plans_${prefix}.sql`))
    expect(readdirSync(join(project, 'db/migrations/tenant'))).toEqual([
      '0001_create_notes.sql',
      '0002_notes_body_index.sql',
    ])
  })

  it('migrate lint exits 1 on a finding, 0 once the migration is safe', async () => {
    const dir = join(project, 'db/migrations')
    writeFileSync(
      join(dir, `shared/0001_plans_${prefix}.sql`),
      `CREATE TABLE ${prefix}_plans (id int PRIMARY KEY);`,
    )
    writeFileSync(
      join(dir, 'tenant/0001_create_notes.sql'),
      'CREATE TABLE notes (id bigserial PRIMARY KEY, body text);',
    )
    writeFileSync(
      join(dir, 'tenant/0002_notes_body_index.sql'),
      'CREATE INDEX notes_body_idx ON notes (body);',
    )
    const bad = await runCli(['migrate', 'lint'], { cwd: project, env: noEnv })
    expect(bad.code).toBe(1)
    expect(bad.stdout).toContain('0002_notes_body_index.sql:1 require-concurrent-index')
    expect(bad.stdout).toContain('fix: CREATE INDEX CONCURRENTLY')
    writeFileSync(
      join(dir, 'tenant/0002_notes_body_index.sql'),
      'CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);',
    )
    const good = await runCli(['migrate', 'lint'], { cwd: project, env: noEnv })
    expect(good.stdout).toContain('0 finding(s) in 3 file(s)')
    expect(good.code).toBe(0)
  })

  it('tenants provision, migrate up and status, tenants deprovision (refused without --mode)', async () => {
    const up = await runCli(['migrate', 'up'], { cwd: project, env: noEnv })
    // The tenant has no schema yet: reported, exit 1.
    expect(up.code).toBe(1)
    expect(up.stdout).toContain(`keel tenants provision ${tenant}`)
    const prov = await runCli(['tenants', 'provision', tenant], { cwd: project, env: noEnv })
    expect(prov.stderr).toBe('')
    expect(prov.code).toBe(0)
    expect(prov.stdout).toContain('2 migration(s) applied')
    const status = await runCli(['migrate', 'status'], { cwd: project, env: noEnv })
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(new RegExp(`${tenant}\\s+ok\\s+2\\s+0`))
    expect(status.stdout).toContain('2 scope(s): 2 ok')
    const refused = await runCli(['tenants', 'deprovision', tenant], { cwd: project, env: noEnv })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('KEEL_MIGRATE_DEPROVISION_MODE_REQUIRED')
    const dropped = await runCli(['tenants', 'deprovision', tenant, '--mode', 'drop'], {
      cwd: project,
      env: noEnv,
    })
    expect(dropped.code).toBe(0)
    expect(dropped.stdout).toContain(`tenant ${tenant} dropped`)
  })

  it('without a config file or KEEL_MIGRATE_URL, says what is missing', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'keel-cli-empty-'))
    const r = await runCli(['migrate', 'up'], { cwd: empty, env: noEnv })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('KEEL_MIGRATE_CONFIG_INVALID')
    expect(r.stderr).toContain('KEEL_MIGRATE_URL')
  })

  it('reads everything from the environment when there is no config file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keel-cli-env-'))
    const r = await runCli(['migrate', 'status', '--json'], {
      cwd: dir,
      env: {
        ...noEnv,
        KEEL_MIGRATE_URL: readStack().primary.ownerUrl,
        KEEL_MIGRATIONS_DIR: join(project, 'db/migrations'),
        KEEL_TENANCY_MODE: 'rls',
      },
    })
    expect(r.stderr).toContain('KEEL_MIGRATE_TENANCY_UNSUPPORTED')
  })
})
