import type pg from 'pg'

/** One database's catalog, as far as tenant isolation goes: read in a few set-based queries, never per table. */
export interface Catalog {
  role: { name: string; superuser: boolean; bypassRls: boolean }
  /** Superuser or BYPASSRLS roles the runtime role is a member of (it can SET ROLE to them). */
  bypassRoles: Array<{ name: string; superuser: boolean; bypassRls: boolean }>
  ownerCanSetRole: boolean
  schemas: string[]
  publicCreateSchemas: string[]
  relations: Relation[]
  columns: Map<number, Column[]>
  policies: Map<number, Policy[]>
  indexes: Map<number, Index[]>
  constraints: Map<number, Constraint[]>
  /** relation oid -> the relations its rewrite rule reads (views and matviews). */
  viewDeps: Map<number, number[]>
  functions: FunctionInfo[]
  /** Functions called from policy expressions, by oid. */
  policyFunctions: Map<number, FunctionInfo>
  /**
   * pg_catalog's function, operator and type names: what a policy function's body may name unqualified
   * without depending on the caller's search_path. Read only when a policy function has no fixed one.
   */
  builtins: { functions: Set<string>; operators: Set<string>; types: Set<string> }
  sequences: Array<{ schema: string; name: string; usable: boolean; owned: boolean }>
  largeObjects: { readable: number; compatPrivileges: boolean; total: number }
}

export interface Relation {
  oid: number
  schema: string
  name: string
  kind: 'r' | 'p' | 'v' | 'm'
  rls: boolean
  forced: boolean
  owner: string
  runtimeOwns: boolean
  runtimeSelect: boolean
  runtimeInsert: boolean
  options: string[]
}

export interface Column {
  name: string
  num: number
  type: string
  notNull: boolean
  hasDefault: boolean
}

export interface Policy {
  name: string
  cmd: 'r' | 'a' | 'w' | 'd' | '*'
  permissive: boolean
  /** Whether its TO list names PUBLIC or a role the runtime role is a member of. */
  appliesToRuntime: boolean
  qual: string | null
  withCheck: string | null
  qualTree: string | null
  withCheckTree: string | null
}

export interface Index {
  name: string
  unique: boolean
  primary: boolean
  keys: number[]
  constraint: string | null
  /** Access method, operator classes, options, expressions and predicate: what the fingerprint compares. */
  shape: string
  partial: boolean
  hasExpressions: boolean
}

export interface Constraint {
  name: string
  type: string
  keys: number[]
  refRelation: number | null
  refKeys: number[]
  definition: string
}

export interface FunctionInfo {
  oid: number
  schema: string
  name: string
  args: string
  securityDefiner: boolean
  config: string[]
  executable: boolean
  language: string
  source: string
  owner: string
}

const SYSTEM_SCHEMAS = `n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp\\_%' AND n.nspname NOT LIKE 'pg_toast\\_temp\\_%'`

function group<T>(rows: Array<T & { rel: string | number }>, map: (row: T) => unknown): Map<number, never[]> {
  const out = new Map<number, never[]>()
  for (const row of rows) {
    const key = Number(row.rel)
    const list = out.get(key) ?? []
    if (list.length === 0) out.set(key, list)
    list.push(map(row) as never)
  }
  return out
}

const intArray = (v: unknown): number[] => (Array.isArray(v) ? v.map(Number) : [])

export async function readCatalog(
  client: pg.ClientBase,
  runtimeRole: string,
  only?: string[],
): Promise<Catalog> {
  const role = await client.query<{ rolname: string; rolsuper: boolean; rolbypassrls: boolean }>(
    'SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1',
    [runtimeRole],
  )
  const roleRow = role.rows[0]
  if (roleRow === undefined) return Promise.reject(new RoleUnknown(runtimeRole))
  const bypass = await client.query<{ rolname: string; rolsuper: boolean; rolbypassrls: boolean }>(
    `SELECT rolname, rolsuper, rolbypassrls FROM pg_roles
      WHERE rolname <> $1 AND (rolsuper OR rolbypassrls) AND pg_has_role($1, oid, 'MEMBER') ORDER BY rolname`,
    [runtimeRole],
  )
  const setRole = await client.query<{ ok: boolean }>(
    "SELECT pg_has_role(current_user, $1, 'MEMBER') AS ok",
    [runtimeRole],
  )
  const schemas = await client.query<{ nspname: string; public_create: boolean }>(
    `SELECT n.nspname,
            EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CREATE') AS public_create
       FROM pg_namespace n
      WHERE ${SYSTEM_SCHEMAS} AND ($1::text[] IS NULL OR n.nspname = ANY ($1))
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
      ORDER BY n.nspname`,
    [only ?? null],
  )
  const schemaNames = schemas.rows.map((r) => r.nspname)
  const rels = await client.query(
    `SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind,
            c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, pg_get_userbyid(c.relowner) AS owner,
            pg_has_role($1, c.relowner, 'USAGE') AS runtime_owns,
            has_table_privilege($1, c.oid, 'SELECT') AS runtime_select,
            has_table_privilege($1, c.oid, 'INSERT') AS runtime_insert,
            coalesce(c.reloptions, '{}') AS options
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition AND n.nspname = ANY ($2)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY n.nspname, c.relname`,
    [runtimeRole, schemaNames],
  )
  const relations: Relation[] = rels.rows.map((r) => ({
    oid: Number(r.oid),
    schema: r.schema,
    name: r.name,
    kind: r.kind,
    rls: r.rls,
    forced: r.forced,
    owner: r.owner,
    runtimeOwns: r.runtime_owns,
    runtimeSelect: r.runtime_select,
    runtimeInsert: r.runtime_insert,
    options: r.options,
  }))
  const oids = relations.map((r) => r.oid)
  // One client runs one statement at a time: these run in sequence (pg deprecates queueing on a client).
  const cols = await client.query(
    `SELECT attrelid::int8 AS rel, attname, attnum, format_type(atttypid, atttypmod) AS type, attnotnull,
              atthasdef OR attidentity <> '' OR attgenerated <> '' AS hasdef
         FROM pg_attribute WHERE attrelid = ANY ($1::int8[]::oid[]) AND attnum > 0 AND NOT attisdropped
        ORDER BY attrelid, attnum`,
    [oids],
  )
  const pols = await client.query(
    `SELECT polrelid::int8 AS rel, polname, polcmd, polpermissive,
              (SELECT bool_or(r = 0 OR pg_has_role($2, r, 'MEMBER')) FROM unnest(polroles) r) AS applies,
              pg_get_expr(polqual, polrelid) AS qual, pg_get_expr(polwithcheck, polrelid) AS wc,
              polqual::text AS qual_tree, polwithcheck::text AS wc_tree
         FROM pg_policy WHERE polrelid = ANY ($1::int8[]::oid[]) ORDER BY polrelid, polname`,
    [oids, runtimeRole],
  )
  const idx = await client.query(
    `SELECT i.indrelid::int8 AS rel, ic.relname AS name, i.indisunique, i.indisprimary,
              string_to_array(i.indkey::text, ' ')::int2[] AS keys, con.conname,
              i.indpred IS NOT NULL AS partial, i.indexprs IS NOT NULL AS exprs,
              concat_ws(' ', am.amname, i.indclass::text, i.indoption::text, i.indexprs::text, i.indpred::text) AS shape
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
         LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = ANY ($1::int8[]::oid[]) ORDER BY i.indrelid, ic.relname`,
    [oids],
  )
  const cons = await client.query(
    `SELECT conrelid::int8 AS rel, conname, contype, conkey, confrelid::int8 AS ref, confkey,
              pg_get_constraintdef(oid) AS def
         FROM pg_constraint WHERE conrelid = ANY ($1::int8[]::oid[]) ORDER BY conrelid, conname`,
    [oids],
  )
  const deps = await client.query(
    `SELECT DISTINCT r.ev_class::int8 AS rel, d.refobjid::int8 AS dep
         FROM pg_rewrite r
         JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
         JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
        WHERE r.ev_class = ANY ($1::int8[]::oid[]) AND d.refobjid <> r.ev_class`,
    [oids],
  )
  const functions = await client.query(
    `SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args,
            p.prosecdef, coalesce(p.proconfig, '{}') AS config, has_function_privilege($1, p.oid, 'EXECUTE') AS executable,
            l.lanname, p.prosrc, pg_get_userbyid(p.proowner) AS owner
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
      WHERE n.nspname = ANY ($2) AND p.prokind IN ('f', 'p')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
      ORDER BY n.nspname, p.proname`,
    [runtimeRole, schemaNames],
  )
  const toFunction = (r: Record<string, unknown>): FunctionInfo => ({
    oid: Number(r.oid),
    schema: r.schema as string,
    name: r.name as string,
    args: r.args as string,
    securityDefiner: r.prosecdef as boolean,
    config: r.config as string[],
    executable: r.executable as boolean,
    language: r.lanname as string,
    source: r.prosrc as string,
    owner: r.owner as string,
  })
  const policyFunctionOids = new Set<number>()
  for (const p of pols.rows) {
    for (const tree of [p.qual_tree, p.wc_tree] as Array<string | null>) {
      for (const m of tree?.matchAll(/:funcid (\d+)/g) ?? []) policyFunctionOids.add(Number(m[1]))
    }
  }
  // Built-ins are in pg_catalog, which is never inspected: only the app's own functions come back.
  const policyFunctions = new Map<number, FunctionInfo>()
  if (policyFunctionOids.size > 0) {
    const pf = await client.query(
      `SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args,
              p.prosecdef, coalesce(p.proconfig, '{}') AS config, has_function_privilege($1, p.oid, 'EXECUTE') AS executable,
              l.lanname, p.prosrc, pg_get_userbyid(p.proowner) AS owner
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
        WHERE p.oid = ANY ($2::int8[]::oid[]) AND n.nspname <> 'pg_catalog'`,
      [runtimeRole, [...policyFunctionOids]],
    )
    for (const r of pf.rows) policyFunctions.set(Number(r.oid), toFunction(r))
  }
  const builtins = { functions: new Set<string>(), operators: new Set<string>(), types: new Set<string>() }
  if ([...policyFunctions.values()].some((f) => !f.config.some((c) => c.startsWith('search_path=')))) {
    const b = await client.query<{ procs: string[]; ops: string[]; types: string[] }>(
      `SELECT (SELECT array_agg(DISTINCT proname::text) FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace) AS procs,
              (SELECT array_agg(DISTINCT oprname::text) FROM pg_operator WHERE oprnamespace = 'pg_catalog'::regnamespace) AS ops,
              (SELECT array_agg(DISTINCT typname::text) FROM pg_type WHERE typnamespace = 'pg_catalog'::regnamespace) AS types`,
    )
    const row = b.rows[0]
    builtins.functions = new Set(row?.procs ?? [])
    builtins.operators = new Set(row?.ops ?? [])
    builtins.types = new Set(row?.types ?? [])
  }
  const sequences = await client.query(
    `SELECT n.nspname AS schema, c.relname AS name,
            has_sequence_privilege($1, c.oid, 'USAGE') OR has_sequence_privilege($1, c.oid, 'UPDATE') AS usable,
            EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')) AS owned
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND n.nspname = ANY ($2) ORDER BY 1, 2`,
    [runtimeRole, schemaNames],
  )
  const lo = await client.query<{ total: string; readable: string; compat: string }>(
    `SELECT count(*) AS total,
            count(*) FILTER (WHERE pg_has_role($1, l.lomowner, 'USAGE')
              OR EXISTS (SELECT 1 FROM aclexplode(l.lomacl) a WHERE a.grantee = 0 OR pg_has_role($1, a.grantee, 'USAGE'))) AS readable,
            current_setting('lo_compat_privileges') AS compat
       FROM pg_largeobject_metadata l`,
    [runtimeRole],
  )
  const loRow = lo.rows[0]!
  return {
    role: { name: roleRow.rolname, superuser: roleRow.rolsuper, bypassRls: roleRow.rolbypassrls },
    bypassRoles: bypass.rows.map((r) => ({
      name: r.rolname,
      superuser: r.rolsuper,
      bypassRls: r.rolbypassrls,
    })),
    ownerCanSetRole: setRole.rows[0]?.ok === true,
    schemas: schemaNames,
    publicCreateSchemas: schemas.rows.filter((r) => r.public_create).map((r) => r.nspname),
    relations,
    columns: group(cols.rows, (r) => ({
      name: r.attname,
      num: r.attnum,
      type: r.type,
      notNull: r.attnotnull,
      hasDefault: r.hasdef,
    })),
    policies: group(pols.rows, (r) => ({
      name: r.polname,
      cmd: r.polcmd,
      permissive: r.polpermissive,
      appliesToRuntime: r.applies === true,
      qual: r.qual,
      withCheck: r.wc,
      qualTree: r.qual_tree,
      withCheckTree: r.wc_tree,
    })),
    indexes: group(idx.rows, (r) => ({
      name: r.name,
      unique: r.indisunique,
      primary: r.indisprimary,
      keys: intArray(r.keys),
      constraint: r.conname,
      // Node trees carry parse positions, which differ between schemas created from the same SQL.
      shape: String(r.shape).replace(/ :location -?\d+/g, ''),
      partial: r.partial,
      hasExpressions: r.exprs,
    })),
    constraints: group(cons.rows, (r) => ({
      name: r.conname,
      type: r.contype,
      keys: intArray(r.conkey),
      refRelation: r.ref === null || Number(r.ref) === 0 ? null : Number(r.ref),
      refKeys: intArray(r.confkey),
      definition: r.def,
    })),
    viewDeps: group(deps.rows, (r) => Number(r.dep)),
    functions: functions.rows.map(toFunction),
    policyFunctions,
    builtins,
    sequences: sequences.rows,
    largeObjects: {
      total: Number(loRow.total),
      readable: Number(loRow.readable),
      compatPrivileges: loRow.compat === 'on',
    },
  }
}

export class RoleUnknown extends Error {
  constructor(readonly role: string) {
    super(`role ${role} does not exist`)
  }
}
