import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { doctor, type Finding } from '../../src/index.js'
import {
  cleanSchema,
  createDatabase,
  dropDatabase,
  PLANTED,
  plantedSchema,
  run,
  stackUrls,
  uniqueSuffix,
  urlFor,
} from './fixture.js'

// Two databases on the stack's primary: one with exactly one planted violation per rule, and its clean
// twin. Runtime roles get only what the README tells users to grant (CONNECT, USAGE on the schema, DML).
const id = uniqueSuffix()
const fixtureDb = `doctor_fixture_${id}`
const twinDb = `doctor_twin_${id}`
const fxRole = `doctor_app_${id}`
const twinRole = `doctor_twin_app_${id}`
const bypassRole = `doctor_bypass_${id}`
const superRole = `doctor_super_${id}`
const bypassRuntime = `doctor_bypass_app_${id}`
const ownerGroup = `doctor_owner_group_${id}`
const roles = [fxRole, twinRole, bypassRole, superRole, bypassRuntime, ownerGroup]

const pairs = (findings: Finding[]) => findings.map((f) => [f.rule, f.object] as const).sort()

const base = (database: string, runtimeRole: string, password = 'app') => ({
  connection: urlFor('keel_owner', 'owner', database),
  runtimeRole,
  runtimeConnection: urlFor(runtimeRole, password, database),
  tenancy: { mode: 'rls' as const, setting: 'app.tenant_id' },
  sharedTables: ['plans'],
  tenantColumns: { tenants: 'id' },
})

beforeAll(async () => {
  const { superUrl } = stackUrls()
  await run(
    superUrl,
    `CREATE ROLE ${fxRole} LOGIN PASSWORD 'app';
     CREATE ROLE ${twinRole} LOGIN PASSWORD 'app';
     CREATE ROLE ${bypassRole} NOLOGIN BYPASSRLS;
     GRANT ${bypassRole} TO ${fxRole};
     CREATE ROLE ${superRole} LOGIN SUPERUSER PASSWORD 'app';
     CREATE ROLE ${bypassRuntime} LOGIN BYPASSRLS PASSWORD 'app';
     CREATE ROLE ${ownerGroup} NOLOGIN;
     GRANT ${ownerGroup} TO ${fxRole};`,
  )
  await createDatabase(fixtureDb, [fxRole])
  await createDatabase(twinDb, [twinRole, superRole, bypassRuntime])
  await run(urlFor('keel_owner', 'owner', twinDb), cleanSchema(twinRole))
  await run(urlFor('keel_owner', 'owner', fixtureDb), cleanSchema(fxRole) + plantedSchema(fxRole))
  // Only a superuser may hand a table to a role the owner is not a member of.
  await run(
    urlFor('postgres', null, fixtureDb),
    `ALTER TABLE public.owned_by_app OWNER TO ${fxRole}; ALTER TABLE public.owned_by_group OWNER TO ${ownerGroup}`,
  )
})

afterAll(async () => {
  await dropDatabase(fixtureDb)
  await dropDatabase(twinDb)
  await run(stackUrls().superUrl, roles.map((r) => `DROP ROLE IF EXISTS ${r};`).join('\n'))
})

describe('doctor on the fixture database', () => {
  it('reports exactly the planted violations, each rule at least once', async () => {
    const result = await doctor(base(fixtureDb, fxRole))
    const expected = PLANTED.map(
      ([rule, object]) => [rule, object === '<runtime>' ? fxRole : object] as const,
    ).sort()
    expect(pairs(result.findings)).toEqual(expected)
    expect(result.probe).toEqual({ ran: true })
    for (const f of result.findings) {
      expect(f.message.length).toBeGreaterThan(20)
      expect(f.fix.length).toBeGreaterThan(10)
    }
    // Warnings are for what slows or is fragile, errors for what leaks.
    const warnings = result.findings.filter((f) => f.severity === 'warning').map((f) => f.rule)
    expect(warnings.sort()).toEqual([
      'function-mutable-search-path',
      'function-mutable-search-path',
      'index-not-leading-tenant',
      'policy-casts-column',
      'policy-without-with-check',
      'policy-without-with-check',
      'sequence-shared',
    ])
  })

  it('leaves nothing behind: the probe rolled back', async () => {
    const pg = (await import('pg')).default
    const client = new pg.Client({ connectionString: urlFor('postgres', null, fixtureDb) })
    await client.connect()
    try {
      const { rows } = await client.query(
        "SELECT (SELECT count(*) FROM probe_read) AS r, (SELECT count(*) FROM probe_insert) AS i, (SELECT count(*) FROM customers WHERE tenant_id NOT IN ('t1', 't2')) AS c",
      )
      expect(rows[0]).toEqual({ r: '2', i: '2', c: '0' })
    } finally {
      await client.end()
    }
  })

  it('ignore drops accepted findings, by rule or by rule and object', async () => {
    const result = await doctor({
      ...base(fixtureDb, fxRole),
      probe: false,
      ignore: [{ rule: 'sequence-shared' }, { rule: 'rls-disabled', object: 'public.no_rls' }],
    })
    const rules = result.findings.map((f) => f.rule)
    expect(rules).not.toContain('sequence-shared')
    expect(rules).not.toContain('rls-disabled')
    expect(result.probe).toEqual({ ran: false, reason: 'probe: false' })
  })
})

describe('doctor on the clean twin', () => {
  it('reports nothing, and the probe ran on every tenant table', async () => {
    const result = await doctor(base(twinDb, twinRole))
    expect(result.findings).toEqual([])
    expect(result.probe).toEqual({ ran: true })
    expect(result.checked).toMatchObject({ databases: 1, tables: 4, tenantTables: 3, probedTables: 3 })
  })

  it('a superuser runtime role is one finding, and the probe does not run', async () => {
    const result = await doctor(base(twinDb, superRole))
    expect(pairs(result.findings)).toEqual([['runtime-role-superuser', superRole]])
    expect(result.probe.ran).toBe(false)
  })

  it('a BYPASSRLS runtime role is one finding', async () => {
    const result = await doctor(base(twinDb, bypassRuntime))
    expect(pairs(result.findings)).toEqual([['runtime-role-bypassrls', bypassRuntime]])
  })

  it('an unknown runtime role and bad options are errors, not findings', async () => {
    await expect(doctor({ ...base(twinDb, 'no_such_role_x') })).rejects.toMatchObject({
      code: 'KEEL_DOCTOR_ROLE_UNKNOWN',
    })
    await expect(doctor({ ...base(twinDb, 'bad role; drop') })).rejects.toMatchObject({
      code: 'KEEL_DOCTOR_CONFIG_INVALID',
    })
    const secret = 'postgres://keel_owner:hunter2@127.0.0.1:1/x'
    const error = await doctor({ connection: secret, runtimeRole: 'x', sharedTables: [42 as never] }).catch(
      (e) => e,
    )
    expect(error.code).toBe('KEEL_DOCTOR_CONFIG_INVALID')
    expect(String(error.message)).not.toContain('hunter2')
  })

  it('a runtime connection that logs in as another role is refused: the probe would prove nothing', async () => {
    const options = { ...base(twinDb, twinRole), runtimeConnection: urlFor(superRole, 'app', twinDb) }
    await expect(doctor(options)).rejects.toMatchObject({
      code: 'KEEL_DOCTOR_CONFIG_INVALID',
      details: { fields: ['runtimeConnection'] },
    })
  })

  it('without a runtime connection and no SET ROLE, the probe is skipped and says why', async () => {
    const { runtimeConnection: _, ...rest } = base(twinDb, twinRole)
    const result = await doctor(rest)
    expect(result.findings).toEqual([])
    expect(result.probe).toEqual({
      ran: false,
      reason: `no runtimeConnection given, and the owner cannot SET ROLE ${twinRole}`,
    })
  })
})
