import { z } from 'zod'
import { KeelError } from '../errors.js'
import { SESSION_FUNCTIONS } from '../sql/pure-functions.js'

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

/**
 * The runtime refuses a host with neither a connectionString nor a host. The type does not insist on
 * one: `{ connectionString: process.env.DATABASE_URL }` (a `string | undefined`) is how apps write it,
 * and an unset variable is then a clear KEEL_CONFIG_INVALID at createKeel(), as with pg's own config.
 */
function addressed<S extends z.ZodType>(schema: S) {
  return schema.refine(needsAddress.check as (h: z.output<S>) => boolean, {
    message: needsAddress.message,
  }) as unknown as z.ZodType<z.output<S>, z.input<S>>
}

const hostSchema = addressed(z.strictObject(hostFields))

const replicaSchema = addressed(
  z.strictObject({
    ...hostFields,
    /** Shown in health output, logs and metrics. @default 'replica<n>' (1-based) */
    name: z.string().min(1).max(63).optional(),
  }),
)

const millis = z.number().int().min(0)

/**
 * keel spells every duration `<name>Ms` (ADR 0029). pg's spellings of the same pool options are accepted
 * too, so options copied from a pg Pool config keep working; giving both spellings of one is refused.
 */
const PG_ALIASES = {
  idleTimeoutMillis: 'idleTimeoutMs',
  connectionTimeoutMillis: 'connectionTimeoutMs',
  keepAliveInitialDelayMillis: 'keepAliveInitialDelayMs',
  query_timeout: 'queryTimeoutMs',
} as const

const poolSchema = z
  .strictObject({
    /** Connections per host. @default 10 */
    max: z.number().int().min(1).max(10_000).default(10),
    /** Close a connection idle this long. @default 10000 */
    idleTimeoutMs: millis.optional(),
    /** pg's name for `idleTimeoutMs` (alias). */
    idleTimeoutMillis: millis.optional(),
    /** Give up opening a new connection after this long. @default 5000 */
    connectionTimeoutMs: millis.optional(),
    /** pg's name for `connectionTimeoutMs` (alias). */
    connectionTimeoutMillis: millis.optional(),
    /** Retire a connection after this many checkouts (0 = never). @default 0 */
    maxUses: z.number().int().min(0).default(0),
    /** TCP keepalive on every connection (pg's `keepAlive`): a vanished peer is found out. @default true */
    keepAlive: z.boolean().default(true),
    /** Idle time before the first keepalive probe. @default 10000 */
    keepAliveInitialDelayMs: millis.optional(),
    /** pg's name for `keepAliveInitialDelayMs` (alias). */
    keepAliveInitialDelayMillis: millis.optional(),
    /**
     * A client-side limit on each statement (pg's `query_timeout`), whatever the server does. Past it keel
     * closes the connection and the call fails with KEEL_QUERY_TIMEOUT. @default undefined (none)
     */
    queryTimeoutMs: z.number().int().min(1).optional(),
    /** pg's name for `queryTimeoutMs` (alias). */
    query_timeout: z.number().int().min(1).optional(),
  })
  .superRefine((pool, ctx) => {
    for (const [alias, name] of Object.entries(PG_ALIASES)) {
      if (pool[alias as keyof typeof PG_ALIASES] !== undefined && pool[name] !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [alias],
          message: `give ${name} or its alias ${alias}, not both`,
        })
      }
    }
  })
  .transform(
    ({ idleTimeoutMillis, connectionTimeoutMillis, keepAliveInitialDelayMillis, query_timeout, ...pool }) => {
      const queryTimeoutMs = pool.queryTimeoutMs ?? query_timeout
      return {
        max: pool.max,
        idleTimeoutMs: pool.idleTimeoutMs ?? idleTimeoutMillis ?? 10_000,
        connectionTimeoutMs: pool.connectionTimeoutMs ?? connectionTimeoutMillis ?? 5_000,
        maxUses: pool.maxUses,
        keepAlive: pool.keepAlive,
        keepAliveInitialDelayMs: pool.keepAliveInitialDelayMs ?? keepAliveInitialDelayMillis ?? 10_000,
        ...(queryTimeoutMs === undefined ? {} : { queryTimeoutMs }),
      }
    },
  )

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
  /**
   * Functions your statements call that leave no session state behind (no session-level setting, no
   * session advisory lock, no temp object, no SQL they are given) and write no rows: extension functions
   * (PostGIS, pgcrypto, pg_trgm) and your own helpers. A statement that calls only these and builtins keel
   * knows stays on the plain path instead of the probed one (ADR 0022). `name` covers any schema,
   * `schema.name` that call only. keel cannot check the claim: a function listed here that changes the
   * session defeats the guard, and one that writes rows defeats read-your-writes for its statements.
   * @default []
   */
  safeFunctions: z
    .array(
      z
        .string()
        .regex(/^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$/, {
          message: 'must be a lower-case function name or schema.name',
        })
        .refine((name) => !SESSION_FUNCTIONS.has(name.slice(name.lastIndexOf('.') + 1)), {
          message: 'changes session state or runs SQL text: it cannot be declared safe',
        }),
    )
    .max(10_000)
    .default([]),
  /**
   * How long past a statement's statementTimeoutMs (or past an abort's cancel) keel waits for the
   * server to answer before it closes the connection itself: a stopped host never answers, and a call
   * must still end. @default 2000
   */
  timeoutGraceMs: z.number().int().min(0).max(600_000).default(2_000),
  /**
   * How long keel.close() waits for the calls it accepted (running, queued, transactions) to finish;
   * past it they are cancelled with KEEL_CLOSED and the pools end (0 = wait however long). @default 30000
   */
  closeTimeoutMs: z.number().int().min(0).default(30_000),
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
  sharedSchemas: z
    .array(
      z
        .string()
        .min(1)
        .refine(
          (s) => Buffer.byteLength(s, 'utf8') <= 63,
          'at most 63 bytes: Postgres truncates longer names',
        ),
    )
    .default([]),
})

// 'database' (a database per tenant) is issue #13: until it runs, the type does not offer it either.
const tenancySchema = z.discriminatedUnion('mode', [rlsSchema, schemaSchema], {
  error: (issue) =>
    issue.code === 'invalid_union'
      ? "must be 'rls' or 'schema' ('database', a database per tenant, is not available in this release)"
      : undefined,
})

/**
 * How many of a host's connections one tenant may hold: `{ share }` a fraction of `pool.max` (at least one
 * connection), `{ max }` a count (at most `pool.max`). A bare number is the older form, still accepted:
 * below 1 a share, from 1 up a count (ADR 0029).
 */
export type TenantConnections = number | { share: number } | { max: number }

const tenantConnectionsSchema = z.union([
  z.number().positive(),
  z.strictObject({
    /** A fraction of `pool.max`, 0 < share <= 1. */
    share: z.number().positive().max(1),
  }),
  z.strictObject({
    /** A number of connections (capped at `pool.max`). */
    max: z.number().int().min(1),
  }),
])

/** The count a `TenantConnections` comes to on a pool of `poolMax` (the old bare-number rule included). */
function connectionCount(value: TenantConnections, poolMax: number): number {
  if (typeof value === 'number') {
    return value < 1 ? Math.max(1, Math.floor(value * poolMax)) : Math.min(poolMax, Math.floor(value))
  }
  if ('share' in value) return Math.max(1, Math.floor(value.share * poolMax))
  return Math.min(poolMax, value.max)
}

const limitsSchema = z.strictObject({
  /**
   * Connections one tenant may hold at once, per host: `{ share: 0.5 }` (of `pool.max`) or `{ max: 3 }`.
   * @default { share: 0.5 }
   */
  tenantConnections: tenantConnectionsSchema.default({ share: 0.5 }),
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
  tenantConnections?: TenantConnections
  statementTimeoutMs?: number
}

/** Limits as keel applies them: `tenantConnections` is a count of connections per host. */
export interface ResolvedLimits {
  readonly tenantConnections: number
  readonly acquireTimeoutMs: number
  readonly statementTimeoutMs: number
  readonly forTenant?:
    | ((tenantId: string) => { tenantConnections?: number; statementTimeoutMs?: number } | undefined)
    | undefined
}

function resolveLimits(limits: z.output<typeof limitsSchema>, poolMax: number): ResolvedLimits {
  const { forTenant, ...rest } = limits
  const resolved = { ...rest, tenantConnections: connectionCount(rest.tenantConnections, poolMax) }
  if (forTenant === undefined) return resolved
  return {
    ...resolved,
    // The override is the app's code, called per tenant: its tenantConnections is checked and counted
    // by the same rules as the config's.
    forTenant: (tenantId) => {
      const override = forTenant(tenantId)
      if (override === undefined) return undefined
      const { tenantConnections, ...others } = override
      if (tenantConnections === undefined) return others
      const parsed = tenantConnectionsSchema.safeParse(tenantConnections)
      if (!parsed.success) {
        throw new KeelError(
          'KEEL_CONFIG_INVALID',
          'invalid keel config: limits.forTenant returned an invalid tenantConnections',
          { details: { fields: ['limits.forTenant.tenantConnections'], tenantId } },
        )
      }
      return { ...others, tenantConnections: connectionCount(parsed.data, poolMax) }
    },
  }
}

function isRedisUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'redis:' || url.protocol === 'rediss:'
  } catch {
    return false
  }
}

const cacheSchema = z.strictObject({
  /** Redis for the shared tier, stampede locks and cross-process invalidation. Without it: L1 only. */
  redis: z
    .strictObject({
      /** `redis://[:password@]host:port[/db]`. The password never appears in errors or logs. */
      url: z.string().refine(isRedisUrl, { message: 'must be a redis:// or rediss:// URL' }),
      /** Per-command timeout: a slow Redis counts as a failing one. @default 100 */
      commandTimeoutMs: z.number().int().min(1).max(60_000).default(100),
    })
    .optional(),
  l1: z
    .strictObject({
      /** Entries kept in process. @default 10000 */
      maxEntries: z.number().int().min(1).max(10_000_000).default(10_000),
      /** Approximate bytes kept in process (serialized size). @default 67108864 (64 MiB) */
      maxBytes: z
        .number()
        .int()
        .min(1_024)
        .default(64 * 1_024 * 1_024),
      /** Deep-freeze cached objects and arrays so no caller can mutate what others share. @default true */
      freeze: z.boolean().default(true),
    })
    .prefault({}),
  /** How long a value is fresh. @default 60000 */
  ttlMs: z.number().int().min(1).default(60_000),
  /** After ttlMs, how long a value is served while one caller refreshes it. @default 0 */
  staleMs: z.number().int().min(0).default(0),
  /** After that, how long a value may still be served when the loader fails (fail-safe). @default 0 */
  graceMs: z.number().int().min(0).default(0),
  /** With a stale value at hand, return it if the loader takes longer than this (0 = wait). @default 0 */
  softTimeoutMs: z.number().int().min(0).default(0),
  /** TTLs vary by up to this fraction so entries written together do not expire together. @default 0.1 */
  jitter: z.number().min(0).max(0.5).default(0.1),
  /** XFetch beta: how eagerly hot keys refresh before expiry (0 = never early). @default 1 */
  earlyRefreshBeta: z.number().min(0).max(10).default(1),
  /** Prefix of every Redis key and channel. @default 'keel' */
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,32}$/)
    .default('keel'),
  /** How long one process may hold a key's loader lock; a crashed loader blocks others no longer. @default 5000 */
  lockTtlMs: z.number().int().min(100).max(600_000).default(5_000),
  /** How long invalidate() waits for the other processes to confirm they dropped their copies. @default 500 */
  invalidationAckTimeoutMs: z.number().int().min(0).max(60_000).default(500),
  /** Consecutive Redis failures that open the circuit breaker. @default 5 */
  breakerThreshold: z.number().int().min(1).default(5),
  /** How long the breaker stays open before one command probes Redis again. @default 2000 */
  breakerResetMs: z.number().int().min(10).default(2_000),
})

const jobsSchema = z.strictObject({
  /** The Redis BullMQ keeps its queue in. */
  redis: z.strictObject({
    url: z.string().refine(isRedisUrl, { message: 'must be a redis:// or rediss:// URL' }),
  }),
  /** The name keel's BullMQ queues start with: each job name has its own, `<queue>~<job name>` (ADR 0025). @default 'keel-jobs' */
  queue: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/)
    .default('keel-jobs'),
  /** BullMQ key prefix in Redis. @default 'bull' */
  prefix: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,32}$/)
    .default('bull'),
  /** How long finished jobs (and so their idempotency keys) are kept. @default 86400000 (24 h) */
  retentionMs: z.number().int().min(1_000).default(86_400_000),
  /** How long jobs that exhausted their retries are kept (dead letters). @default 604800000 (7 d) */
  deadLetterRetentionMs: z.number().int().min(1_000).default(604_800_000),
  /** How long keel.close() waits for running jobs before abandoning them (they run again elsewhere). @default 30000 */
  closeTimeoutMs: z.number().int().min(0).default(30_000),
  /** A worker that stops renewing a job's lock for this long is presumed dead; the job runs elsewhere. @default 30000 */
  lockDurationMs: z.number().int().min(1_000).default(30_000),
  /** Jobs of one tenant running at once across all workers (0 = no cap). @default 0 */
  tenantConcurrency: z.number().int().min(0).default(0),
  /** tx.enqueue() writes to keel_job_outbox (create it with applyJobOutbox) and workers sweep it. @default false */
  outbox: z.boolean().default(false),
  /** How often workers relay outbox rows left behind by a crash, and how old a row must be. @default 2000 */
  outboxSweepMs: z.number().int().min(100).default(2_000),
})

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

export const configSchema = z
  .strictObject({
    postgres: postgresSchema,
    tenancy: tenancySchema.prefault({ mode: 'rls' }),
    tenants: z
      .strictObject({
        /** Accepted tenant ids. Must not accept quotes, spaces or control characters. */
        idPattern: z.instanceof(RegExp).default(TENANT_ID_DEFAULT),
      })
      .prefault({}),
    limits: limitsSchema.prefault({}),
    cache: cacheSchema.prefault({}),
    jobs: jobsSchema.optional(),
    telemetry: telemetrySchema.prefault({}),
    logger: loggerSchema.optional(),
  })
  // A share of connections needs pool.max, which lives in another branch of the config.
  .transform(({ limits, ...config }) => ({
    ...config,
    limits: resolveLimits(limits, config.postgres.pool.max),
  }))

export type KeelConfig = z.input<typeof configSchema>
export type ResolvedConfig = z.output<typeof configSchema>
