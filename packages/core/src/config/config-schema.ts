import { z } from 'zod'

const TENANT_ID_DEFAULT = /^[A-Za-z0-9_-]{1,63}$/

function isPostgresUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'postgres:' || url.protocol === 'postgresql:'
  } catch {
    return false
  }
}

const hostFields = {
  /** `postgres://user:pass@host:port/db`. Its password never appears in errors, logs or spans. */
  connectionString: z
    .string()
    .refine(isPostgresUrl, { message: 'must be a postgres:// or postgresql:// URL' })
    .optional(),
  host: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65_535).optional(),
  user: z.string().min(1).optional(),
  password: z.string().optional(),
  database: z.string().min(1).optional(),
  ssl: z.union([z.boolean(), z.record(z.string(), z.unknown())]).optional(),
}

const needsAddress = {
  check: (h: { connectionString?: string | undefined; host?: string | undefined }) =>
    h.connectionString !== undefined || h.host !== undefined,
  message: 'needs a connectionString or a host',
}

const hostSchema = z.strictObject(hostFields).refine(needsAddress.check, { message: needsAddress.message })

const replicaSchema = z
  .strictObject({
    ...hostFields,
    /** Shown in health output, logs and metrics. @default 'replica<n>' (1-based) */
    name: z.string().min(1).max(63).optional(),
  })
  .refine(needsAddress.check, { message: needsAddress.message })

const poolSchema = z.strictObject({
  /** Connections per host. @default 10 */
  max: z.number().int().min(1).max(10_000).default(10),
  /** Close a connection idle this long. @default 10000 */
  idleTimeoutMs: z.number().int().min(0).default(10_000),
  /** Give up opening a new connection after this long. @default 5000 */
  connectionTimeoutMs: z.number().int().min(0).default(5_000),
  /** Retire a connection after this many checkouts (0 = never). @default 0 */
  maxUses: z.number().int().min(0).default(0),
})

const postgresSchema = z.strictObject({
  primary: hostSchema,
  /** Streaming replicas that serve reads when that is safe. @default [] */
  replicas: z.array(replicaSchema).max(64).default([]),
  /** A replica further behind than this leaves rotation until it catches up. @default 5000 */
  maxReplicaLagMs: z.number().int().min(0).default(5_000),
  /** How often each replica's replay position (and the primary's WAL position) is polled. @default 250 */
  replicaPollMs: z.number().int().min(20).max(60_000).default(250),
  /**
   * The consistency of reads that do not say: 'session' reads your own writes (a replica only once it has
   * replayed them), 'eventual' takes any healthy replica, 'strong' always reads the primary.
   * @default 'session'
   */
  consistency: z.enum(['session', 'eventual', 'strong']).default('session'),
  pool: poolSchema.prefault({}),
  /**
   * Statements kept prepared per connection (LRU), so repeated SQL skips parsing and planning. 0 sends
   * everything unnamed: use it behind PgBouncer < 1.21 in transaction mode. @default 256
   */
  statementCacheSize: z.number().int().min(0).max(10_000).default(256),
  /** Sent as application_name, visible in pg_stat_activity. @default 'keel' */
  applicationName: z.string().min(1).max(63).default('keel'),
})

/** A Postgres custom setting name: `prefix.name`, lower-case identifiers. */
const settingName = z.string().regex(/^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/, {
  message: 'must look like prefix.name (e.g. app.tenant_id)',
})

const rlsSchema = z.strictObject({
  mode: z.literal('rls'),
  /** The custom setting your policies read. @default 'app.tenant_id' */
  setting: settingName.default('app.tenant_id'),
  /**
   * Refuse to run when the runtime role is a superuser or has BYPASSRLS: policies would silently not
   * apply. Only turn this on for a deliberate back-office pool. @default false
   */
  allowBypassRole: z.boolean().default(false),
})

const schemaSchema = z.strictObject({
  mode: z.literal('schema'),
  /** Maps a tenant id to its schema name. @default (id) => `tenant_${id}` */
  schemaFor: z
    .custom<(tenantId: string) => string>((v) => typeof v === 'function', { message: 'must be a function' })
    .default(() => (id: string) => `tenant_${id}`),
  /** Schemas searched after the tenant's own (shared lookup tables). @default [] */
  sharedSchemas: z.array(z.string().min(1).max(63)).default([]),
})

const databaseSchema = z.strictObject({
  mode: z.literal('database'),
  resolve: z.custom<(tenantId: string) => unknown>((v) => typeof v === 'function'),
  maxConnections: z.number().int().min(1).optional(),
})

const tenancySchema = z
  .discriminatedUnion('mode', [rlsSchema, schemaSchema, databaseSchema])
  .refine((t) => t.mode !== 'database', {
    message:
      "mode 'database' (a database per tenant) is not available in this release; use 'rls' or 'schema'",
  })

const limitsSchema = z.strictObject({
  /**
   * Connections one tenant may hold at once, per host: a whole number, or a fraction of `pool.max`
   * (0 < n < 1). @default 0.5
   */
  tenantConnections: z.number().positive().default(0.5),
  /** How long a call waits for one of its tenant's connections before KEEL_TENANT_BUSY. @default 5000 */
  acquireTimeoutMs: z.number().int().min(0).default(5_000),
  /** statement_timeout applied to every statement of a tenant (0 = leave the server's). @default 30000 */
  statementTimeoutMs: z.number().int().min(0).default(30_000),
  /** Per-tenant overrides (an enterprise tenant gets more), called once per tenant and cached. */
  forTenant: z
    .custom<(tenantId: string) => TenantLimitsOverride | undefined>((v) => typeof v === 'function', {
      message: 'must be a function',
    })
    .optional(),
})

export interface TenantLimitsOverride {
  tenantConnections?: number
  statementTimeoutMs?: number
}

const telemetrySchema = z.strictObject({
  tracerProvider: z.custom<object>((v) => typeof v === 'object' && v !== null).optional(),
  meterProvider: z.custom<object>((v) => typeof v === 'object' && v !== null).optional(),
  /**
   * What goes in db.query.text: the SQL with literals replaced by `?` ('sanitized'), as written
   * ('raw', for SQL that only ever uses $n parameters), or nothing ('off'). @default 'sanitized'
   */
  queryText: z.enum(['sanitized', 'raw', 'off']).default('sanitized'),
})

const loggerSchema = z.custom<Logger>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    ['debug', 'info', 'warn', 'error'].every((m) => typeof (v as Record<string, unknown>)[m] === 'function'),
  { message: 'must have debug, info, warn and error methods (pino-compatible)' },
)

/** A pino-compatible logger: `(obj, msg)` calls. keel is silent without one. */
export interface Logger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export const configSchema = z.strictObject({
  postgres: postgresSchema,
  tenancy: tenancySchema.prefault({ mode: 'rls' }),
  tenants: z
    .strictObject({
      /** Accepted tenant ids. Must not accept quotes, spaces or control characters. */
      idPattern: z.instanceof(RegExp).default(TENANT_ID_DEFAULT),
    })
    .prefault({}),
  limits: limitsSchema.prefault({}),
  telemetry: telemetrySchema.prefault({}),
  logger: loggerSchema.optional(),
})

export type KeelConfig = z.input<typeof configSchema>
export type ResolvedConfig = z.output<typeof configSchema>
