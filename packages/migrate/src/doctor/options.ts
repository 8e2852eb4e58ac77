import type pg from 'pg'
import { z } from 'zod'
import { DoctorError } from './doctor-error.js'

const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, { message: 'must be a plain SQL identifier' })
const setting = z.string().regex(/^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/, { message: 'must be prefix.name' })
const fn = <T>() => z.custom<T>((v) => typeof v === 'function', { message: 'must be a function' })

/** A connection string or a pg ClientConfig (the owner's: a role allowed to read the whole catalog). */
const connection = z.union([z.string().min(1), z.looseObject({ connectionString: z.string().optional() })])

/** What createKeel's `tenancy.resolve` answers in database mode (DESIGN.md, Wave 2 contract). */
export interface ResolvedPlacement {
  primary: { connectionString: string }
  replicas?: Array<{ connectionString: string }>
  isolation?: 'database' | 'rls' | 'schema'
  schema?: string
}

// Loose objects: the app's own tenancy config (with keys only createKeel reads) is accepted as it is.
const tenancy = z.discriminatedUnion('mode', [
  z.looseObject({ mode: z.literal('rls'), setting: setting.default('app.tenant_id') }),
  z.looseObject({
    mode: z.literal('schema'),
    schemaFor: fn<(tenantId: string) => string>().optional(),
    sharedSchemas: z.array(identifier).default([]),
  }),
  z.looseObject({
    mode: z.literal('database'),
    resolve: fn<(tenantId: string) => Promise<ResolvedPlacement | null> | ResolvedPlacement | null>(),
    setting: setting.default('app.tenant_id'),
  }),
])

const qualifiedName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$/, {
  message: 'must be name or schema.name',
})

export const doctorOptionsSchema = z
  .strictObject({
    /** The owner's connection: the doctor reads the catalog, and never writes (the probe rolls back). */
    connection,
    /** The role the app connects as (`keel_app`): what it can reach is what the doctor checks. */
    runtimeRole: identifier,
    /** The tenancy config the app gives createKeel. @default { mode: 'rls', setting: 'app.tenant_id' } */
    tenancy: tenancy.default({ mode: 'rls', setting: 'app.tenant_id' }),
    /** Tables every tenant shares on purpose (no tenant column): `plans` or `public.plans`. @default [] */
    sharedTables: z.array(qualifiedName).default([]),
    /** The tenant column. @default 'tenant_id' */
    tenantColumn: identifier.default('tenant_id'),
    /** Tables whose tenant column has another name, e.g. `{ tenants: 'id' }`. @default {} */
    tenantColumns: z.record(qualifiedName, identifier).default({}),
    /** The fleet (schema and database modes). Schema mode without it: every non-shared, non-system schema. */
    tenants: z.union([z.array(z.string().min(1)), fn<() => Promise<string[]> | string[]>()]).optional(),
    /** Only these schemas are inspected (rls mode). @default every schema but the system ones */
    schemas: z.array(identifier).optional(),
    /** The runtime role's own connection, for the live probe; without it the owner must be able to SET ROLE. */
    runtimeConnection: connection.optional(),
    /** Run the live probe (rls): two synthetic tenants in a rolled-back transaction. @default true */
    probe: z.boolean().default(true),
    /** Findings accepted on purpose: `{ rule, object }` (object omitted: the rule everywhere). @default [] */
    ignore: z
      .array(z.strictObject({ rule: z.string().min(1), object: z.string().min(1).optional() }))
      .default([]),
  })
  .refine((o) => o.tenancy.mode !== 'database' || o.tenants !== undefined, {
    message: 'database mode needs the fleet: tenants',
    path: ['tenants'],
  })

export type DoctorOptions = z.input<typeof doctorOptionsSchema>
export type ParsedDoctorOptions = z.output<typeof doctorOptionsSchema>
export type DoctorConnection = string | pg.ClientConfig

export function parseDoctorOptions(options: DoctorOptions): ParsedDoctorOptions {
  const parsed = doctorOptionsSchema.safeParse(options)
  if (parsed.success) return parsed.data
  const fields = parsed.error.issues.map((i) => i.path.join('.'))
  // Never echo values: a connection string carries a password.
  throw new DoctorError(
    'KEEL_DOCTOR_CONFIG_INVALID',
    `invalid doctor options: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
    { details: { fields } },
  )
}

export function clientConfig(c: string | { connectionString?: string | undefined }): pg.ClientConfig {
  return typeof c === 'string' ? { connectionString: c } : (c as pg.ClientConfig)
}
