import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { doctor } from '../../src/index.js'
import {
  ACCESSOR,
  createDatabase,
  dropDatabase,
  keelRls,
  run,
  stackUrls,
  uniqueSuffix,
  urlFor,
} from './fixture.js'

const id = uniqueSuffix()
const db = `doctor_probe_${id}`
const role = `doctor_probe_app_${id}`
const TABLES = 230

beforeAll(async () => {
  await run(stackUrls().superUrl, `CREATE ROLE ${role} LOGIN PASSWORD 'app'`)
  await createDatabase(db, [role])
  const tables = Array.from(
    { length: TABLES },
    (
      _,
      i,
    ) => `CREATE TABLE t${i} (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, note text NOT NULL DEFAULT '', PRIMARY KEY (tenant_id, id));
      INSERT INTO t${i} (tenant_id) VALUES ('t1');
      ${keelRls(`t${i}`)}`,
  ).join('\n')
  await run(
    urlFor('keel_owner', 'owner', db),
    `${ACCESSOR}
     ${tables}
     -- A trigger that refuses every insert with its own error: the probe cannot conclude there.
     CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'read only'; END $$;
     CREATE TRIGGER refuse BEFORE INSERT ON t7 FOR EACH ROW EXECUTE FUNCTION public.refuse();
     GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role};`,
  )
  // The owner may SET ROLE to this runtime role: the probe needs no runtime connection then.
  await run(stackUrls().superUrl, `GRANT ${role} TO keel_owner`)
})

afterAll(async () => {
  await dropDatabase(db)
  await run(stackUrls().superUrl, `REVOKE ${role} FROM keel_owner; DROP ROLE IF EXISTS ${role}`)
})

describe('the live probe', () => {
  it('covers a fleet in rolled-back batches, through SET ROLE when the owner is a member of the runtime role', async () => {
    const result = await doctor({ connection: urlFor('keel_owner', 'owner', db), runtimeRole: role })
    expect(result.findings).toEqual([])
    expect(result.checked.probedTables).toBe(TABLES)
    // The trigger's own error proves nothing: reported as inconclusive, not as a finding.
    expect(result.probe).toEqual({ ran: true, inconclusive: ['public.t7'] })
  })

  it('left nothing behind, and the owner is itself again', async () => {
    const pg = (await import('pg')).default
    const client = new pg.Client({ connectionString: urlFor('postgres', null, db) })
    await client.connect()
    try {
      const { rows } = await client.query(
        `SELECT ${Array.from({ length: TABLES }, (_, i) => `(SELECT count(*) FROM t${i})`).join(' + ')} AS n`,
      )
      expect(rows[0].n).toBe(String(TABLES))
    } finally {
      await client.end()
    }
  })

  it('a probe that finds a leak the catalog rules cannot see, on a table of its own', async () => {
    await run(
      urlFor('keel_owner', 'owner', db),
      `CREATE FUNCTION public.visible(t text) RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog
         AS $$ SELECT t = current_setting('app.tenant_id', true) OR t LIKE 't%' $$;
       DROP POLICY keel_tenant_isolation ON t3;
       CREATE POLICY by_function ON t3 FOR ALL USING (public.visible(tenant_id)) WITH CHECK (public.visible(tenant_id));`,
    )
    const result = await doctor({ connection: urlFor('keel_owner', 'owner', db), runtimeRole: role })
    // The function over the column also defeats the index: a warning from the catalog, the leak from the probe.
    expect(result.findings.map((f) => [f.rule, f.object]).sort()).toEqual([
      ['policy-casts-column', 'public.t3:by_function'],
      ['probe-cross-tenant-read', 'public.t3'],
    ])
  })

  it('an insert with the setting empty must be refused too (a plpgsql check the catalog rules cannot read)', async () => {
    await run(
      urlFor('keel_owner', 'owner', db),
      `CREATE FUNCTION public.no_tenant_yet() RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = pg_catalog
         AS $$ BEGIN RETURN coalesce(current_setting('app.tenant_id', true), '') = ''; END $$;
       DROP POLICY keel_tenant_isolation ON t5;
       CREATE POLICY seeding ON t5 FOR ALL USING (tenant_id = (SELECT public.keel_current_tenant()))
         WITH CHECK (tenant_id = (SELECT public.keel_current_tenant()) OR public.no_tenant_yet());`,
    )
    const result = await doctor({ connection: urlFor('keel_owner', 'owner', db), runtimeRole: role })
    const insert = result.findings.filter((f) => f.object === 'public.t5')
    expect(insert.map((f) => f.rule)).toEqual(['probe-cross-tenant-insert'])
    expect(insert[0]!.message).toContain('with app.tenant_id empty (no tenant)')
  })
})
