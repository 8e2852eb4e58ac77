import { z } from 'zod'
import { SESSION_FUNCTIONS } from '../sql/pure-functions.js'

// The postgres branch of createKeel's config: hosts, the pool (keel's *Ms names with pg's as aliases,
// ADR 0029) and the primary/replica settings.

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

export const hostSchema = addressed(z.strictObject(hostFields))

export const replicaSchema = addressed(
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

export const postgresSchema = z.strictObject({
  /**
   * The primary. Required in rls and schema modes; in database mode each tenant's primary comes from
   * tenancy.resolve (a primary given here is only the default database's, for keel.pgPool() options).
   */
  primary: hostSchema.optional(),
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
  /**
   * While the primary is down (its probe fails; needs replicas), a read-your-writes read that no replica
   * can serve: 'fail' fails at once with KEEL_DB_UNAVAILABLE; 'serve-stale' reads the freshest replica
   * and flags the result `possiblyStale`. Writes always fail. Per call: the query option of that name.
   * @default 'fail'
   */
  whenPrimaryDown: z.enum(['fail', 'serve-stale']).default('fail'),
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
