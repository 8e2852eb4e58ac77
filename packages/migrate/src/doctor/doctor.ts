import pg from 'pg'
import { loadParser } from '../sql/parse-sql.js'
import { type Catalog, RoleUnknown, readCatalog } from './catalog.js'
import { connectFindings, dedupeRoleFindings, type TenantDatabase } from './database-checks.js'
import { DoctorError } from './doctor-error.js'
import { keyFindings } from './key-checks.js'
import {
  functionFindings,
  schemaPrivilegeFindings,
  sharedObjectFindings,
  viewFindings,
} from './object-checks.js'
import {
  clientConfig,
  type DoctorOptions,
  type ParsedDoctorOptions,
  parseDoctorOptions,
  type ResolvedPlacement,
} from './options.js'
import { policyFunctionFindings } from './policy-function-checks.js'
import { runProbe } from './probe.js'
import { rlsFindings } from './rls-checks.js'
import { roleFindings } from './role-checks.js'
import { type Finding, finding } from './rules.js'
import { driftFindings } from './schema-drift.js'
import { splitTables } from './tenant-tables.js'

export interface DoctorResult {
  findings: Finding[]
  /** What was inspected, so "no findings" can be told apart from "nothing looked at". */
  checked: { databases: number; schemas: number; tables: number; tenantTables: number; probedTables: number }
  /** Whether the live probe ran; when it did not, why; tables where it could not conclude. */
  probe: { ran: boolean; reason?: string; inconclusive?: string[] }
}

interface Totals {
  databases: number
  schemas: number
  tables: number
  tenantTables: number
  probedTables: number
  probeRan: boolean
  probeReason: string | undefined
  inconclusive: string[]
}

/**
 * Inspects a database's catalog as its owner and reports every way the runtime role could read or write
 * another tenant's rows (and the keys and indexes that make tenant-scoped queries slow). Read-only: the
 * live probe runs in a transaction that is always rolled back. Resolves with the findings (never rejects
 * for one); rejects with KEEL_DOCTOR_CONFIG_INVALID for bad options and KEEL_DOCTOR_ROLE_UNKNOWN when the
 * runtime role does not exist, and with the driver's error when the owner cannot connect.
 */
export async function doctor(options: DoctorOptions): Promise<DoctorResult> {
  const o = parseDoctorOptions(options)
  // Policy expressions are read on Postgres' own parse tree (policy-expression.ts).
  await loadParser()
  const totals: Totals = {
    databases: 0,
    schemas: 0,
    tables: 0,
    tenantTables: 0,
    probedTables: 0,
    probeRan: false,
    probeReason: undefined,
    inconclusive: [],
  }
  const tenants = typeof o.tenants === 'function' ? await o.tenants() : o.tenants
  let findings: Finding[]
  if (o.tenancy.mode === 'database') {
    findings = await databaseMode(o, tenants ?? [], totals)
  } else {
    findings = await withClient(clientConfig(o.connection), (client) =>
      inspect(client, o, totals, {
        isolation: o.tenancy.mode,
        prefix: '',
        tenants,
        runtimeConnection: o.runtimeConnection === undefined ? undefined : clientConfig(o.runtimeConnection),
      }),
    )
  }
  const ignored = (f: Finding) =>
    o.ignore.some((i) => i.rule === f.rule && (i.object === undefined || i.object === f.object))
  const kept = findings.filter((f) => !ignored(f))
  kept.sort((a, b) =>
    a.severity !== b.severity
      ? a.severity === 'error'
        ? -1
        : 1
      : a.object < b.object
        ? -1
        : a.object > b.object
          ? 1
          : a.rule < b.rule
            ? -1
            : 1,
  )
  const result: DoctorResult = {
    findings: kept,
    checked: {
      databases: totals.databases,
      schemas: totals.schemas,
      tables: totals.tables,
      tenantTables: totals.tenantTables,
      probedTables: totals.probedTables,
    },
    probe: !totals.probeRan
      ? { ran: false, reason: totals.probeReason ?? 'not applicable' }
      : totals.inconclusive.length > 0
        ? { ran: true, inconclusive: totals.inconclusive }
        : { ran: true },
  }
  return result
}

async function withClient<T>(config: pg.ClientConfig, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ ...config, application_name: 'keel doctor' })
  // An 'error' event on an idle client would otherwise crash the process.
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

interface InspectTarget {
  isolation: 'rls' | 'schema' | 'database'
  prefix: string
  tenants: string[] | undefined
  /** Where the probe connects as the runtime role; without it, SET ROLE from the owner when allowed. */
  runtimeConnection: pg.ClientConfig | undefined
  /** Schema isolation inside a tenant database: the tenants' schemas there. */
  schemas?: string[]
}

async function inspect(
  client: pg.Client,
  o: ParsedDoctorOptions,
  totals: Totals,
  target: InspectTarget,
): Promise<Finding[]> {
  let catalog: Catalog
  try {
    catalog = await readCatalog(client, o.runtimeRole, target.isolation === 'rls' ? o.schemas : undefined)
  } catch (error) {
    if (error instanceof RoleUnknown) {
      throw new DoctorError(
        'KEEL_DOCTOR_ROLE_UNKNOWN',
        `runtime role ${o.runtimeRole} does not exist in this database cluster`,
        {
          details: { runtimeRole: o.runtimeRole },
        },
      )
    }
    throw error
  }
  totals.databases++
  totals.schemas += catalog.schemas.length
  totals.tables += catalog.relations.filter((r) => r.kind === 'r' || r.kind === 'p').length
  const { prefix } = target
  const role = roleFindings(catalog, target.isolation)
  // A superuser passes every privilege and ownership check: per-object findings would all be noise.
  if (catalog.role.superuser) return role
  const out: Finding[] = [
    ...role,
    ...functionFindings(catalog, o.runtimeRole, prefix),
    ...schemaPrivilegeFindings(catalog, prefix),
  ]
  if (target.isolation === 'schema') {
    const setting =
      o.tenancy.mode === 'schema' ? o.tenancy : { schemaFor: undefined, sharedSchemas: [] as string[] }
    const schemas =
      target.schemas ??
      (target.tenants !== undefined
        ? target.tenants.map((id) => setting.schemaFor?.(id) ?? id)
        : catalog.schemas.filter((s) => s !== 'public' && !setting.sharedSchemas.includes(s)))
    totals.tenantTables += catalog.relations.filter(
      (r) => schemas.includes(r.schema) && (r.kind === 'r' || r.kind === 'p'),
    ).length
    out.push(...driftFindings(catalog, schemas, prefix))
    return out
  }
  if (target.isolation === 'database') return out
  const settingName = o.tenancy.mode === 'schema' ? 'app.tenant_id' : o.tenancy.setting
  const split = splitTables(catalog, o.tenantColumn, o.tenantColumns, o.sharedTables)
  totals.tenantTables += split.tenant.length
  out.push(
    ...rlsFindings(catalog, split, { runtimeRole: o.runtimeRole, setting: settingName, prefix }),
    ...policyFunctionFindings(catalog, split.tenant, prefix),
    ...keyFindings(catalog, split, prefix),
    ...viewFindings(catalog, (oid) => split.byOid.has(oid), o.runtimeRole, prefix),
    ...sharedObjectFindings(catalog, o.runtimeRole, prefix),
  )
  if (!o.probe) {
    totals.probeReason = 'probe: false'
    return out
  }
  if (catalog.role.superuser || catalog.role.bypassRls) {
    totals.probeReason = 'the runtime role bypasses row level security (see runtime-role-* findings)'
    return out
  }
  // The probe looks for what the catalog rules cannot see; a table they already flag is left to them.
  const flagged = new Set(
    out.filter((f) => f.severity === 'error').map((f) => f.object.replace(/:[^:]*$/, '')),
  )
  const tables = split.tenant.filter((t) => t.relation.rls && !flagged.has(prefix + t.display))
  let probeClient: pg.Client | undefined
  let setRole: string | undefined
  if (target.runtimeConnection !== undefined) {
    probeClient = new pg.Client({ ...target.runtimeConnection, application_name: 'keel doctor probe' })
    probeClient.on('error', () => undefined)
    await probeClient.connect()
    // A probe as another role would prove nothing about this one.
    const who = await probeClient.query<{ user: string }>('SELECT current_user AS user')
    if (who.rows[0]?.user !== o.runtimeRole) {
      await probeClient.end().catch(() => undefined)
      throw new DoctorError(
        'KEEL_DOCTOR_CONFIG_INVALID',
        `runtimeConnection logs in as ${who.rows[0]?.user}, not as the runtime role ${o.runtimeRole}`,
        { details: { fields: ['runtimeConnection'] } },
      )
    }
  } else if (catalog.ownerCanSetRole) {
    setRole = o.runtimeRole
  } else {
    totals.probeReason = `no runtimeConnection given, and the owner cannot SET ROLE ${o.runtimeRole}`
    return out
  }
  try {
    const probe = await runProbe(
      probeClient ?? client,
      {
        ...(setRole === undefined ? {} : { setRole }),
        runtimeRole: o.runtimeRole,
        setting: settingName,
        prefix,
      },
      tables,
    )
    totals.probeRan = true
    totals.probedTables += probe.tables
    totals.inconclusive.push(...probe.inconclusive)
    out.push(...probe.findings)
  } finally {
    await probeClient?.end().catch(() => undefined)
  }
  return out
}

/** The owner's user and password on the tenant's host, port and database. */
function ownerFor(o: ParsedDoctorOptions, placement: ResolvedPlacement): pg.ClientConfig {
  const owner = clientConfig(o.connection)
  const url = new URL(placement.primary.connectionString)
  const ownerUrl = owner.connectionString === undefined ? undefined : new URL(owner.connectionString)
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''))
  return {
    host: url.hostname,
    port: Number(url.port || 5432),
    database,
    user: ownerUrl !== undefined ? decodeURIComponent(ownerUrl.username) : (owner.user as string | undefined),
    password:
      ownerUrl !== undefined ? decodeURIComponent(ownerUrl.password) : (owner.password as string | undefined),
  }
}

async function databaseMode(o: ParsedDoctorOptions, tenants: string[], totals: Totals): Promise<Finding[]> {
  if (o.tenancy.mode !== 'database') return []
  const out: Finding[] = []
  // Tenants sharing one database (rls or schema isolation inside it) are inspected together, once.
  const groups = new Map<string, { placement: ResolvedPlacement; tenants: string[] }>()
  for (const id of tenants) {
    let placement: ResolvedPlacement | null
    try {
      placement = await o.tenancy.resolve(id)
    } catch (error) {
      out.push(unreachable(id, `resolve(${JSON.stringify(id)}) threw: ${(error as Error).message}`))
      continue
    }
    if (placement === null || placement === undefined) {
      out.push(unreachable(id, `resolve(${JSON.stringify(id)}) returned null for a tenant in the fleet`))
      continue
    }
    const cfg = ownerFor(o, placement)
    const key = `${cfg.host}:${cfg.port}/${cfg.database}|${placement.isolation ?? 'database'}`
    const g = groups.get(key)
    if (g === undefined) groups.set(key, { placement, tenants: [id] })
    else g.tenants.push(id)
  }
  const perServer: Array<{ server: string; findings: Finding[] }> = []
  const isolated = new Map<string, { placement: ResolvedPlacement; databases: TenantDatabase[] }>()
  for (const { placement, tenants: ids } of groups.values()) {
    const cfg = ownerFor(o, placement)
    const isolation = placement.isolation ?? 'database'
    const server = `${cfg.host}:${cfg.port}`
    try {
      perServer.push({
        server,
        findings: await withClient(cfg, (client) =>
          inspect(client, o, totals, {
            isolation,
            prefix: `${cfg.database}/`,
            tenants: ids,
            runtimeConnection: { connectionString: placement.primary.connectionString },
            ...(isolation === 'schema' && placement.schema !== undefined
              ? { schemas: [placement.schema] }
              : {}),
          }),
        ),
      })
      if (isolation === 'database') {
        const user = decodeURIComponent(new URL(placement.primary.connectionString).username)
        const entry = isolated.get(server) ?? { placement, databases: [] }
        entry.databases.push({ server, database: cfg.database ?? '', tenants: ids, role: user })
        isolated.set(server, entry)
      }
    } catch (error) {
      if (error instanceof DoctorError) throw error
      const code = (error as { code?: string }).code
      out.push(
        unreachable(
          ids.join(', '),
          `database ${cfg.database} on ${cfg.host}:${cfg.port}: ${code ?? (error as Error).message}`,
        ),
      )
    }
  }
  out.push(...dedupeRoleFindings(perServer))
  // CONNECT is the boundary between tenant databases: read once per server, from pg_database.
  for (const { placement, databases } of isolated.values()) {
    out.push(...(await withClient(ownerFor(o, placement), (client) => connectFindings(client, databases))))
  }
  return out
}

function unreachable(tenant: string, why: string): Finding {
  return finding(
    'tenant-database-unreachable',
    `tenant ${tenant}`,
    `The doctor could not inspect tenant ${tenant}: ${why}. Its isolation is unchecked.`,
    "Check the tenant's placement (tenancy.resolve) and that the owner role can connect to its database.",
  )
}
