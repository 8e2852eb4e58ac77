import type { ClientConfig } from 'pg'
import { z } from 'zod'
import type { BackfillProgress } from '../migrator/backfill-progress.js'

// The tenancy config the app gives createKeel (core's shape, Wave 2 contract), validated here with the
// migrator's own schema: the migrator reads only what it needs and accepts extra keys (the app's config
// object carries pool sizes and callbacks the migrator ignores).

const fn = <T>(what: string) =>
  z.custom<T>((v) => typeof v === 'function', { message: `${what} must be a function` })

const identifier = z
  .string()
  .min(1)
  .refine((s) => Buffer.byteLength(s, 'utf8') <= 63, 'at most 63 bytes: Postgres truncates longer names')

/** What tenancy.resolve returns in database mode (core's contract); only `primary` and the isolation matter here. */
export interface ResolvedTenantPlacement {
  primary: { connectionString: string }
  replicas?: Array<{ connectionString: string }>
  isolation?: 'database' | 'rls' | 'schema'
  schema?: string
}

export const tenancyOptionsSchema = z.discriminatedUnion('mode', [
  z.looseObject({ mode: z.literal('rls') }),
  z.looseObject({
    mode: z.literal('schema'),
    /** Maps a tenant id to its schema name. @default (id) => `tenant_${id}` */
    schemaFor: fn<(tenantId: string) => string>('tenancy.schemaFor').default(
      () => (id: string) => `tenant_${id}`,
    ),
    /** Schemas searched after the tenant's own while its migrations run (shared lookup tables). */
    sharedSchemas: z.array(identifier).default([]),
  }),
  z.looseObject({
    mode: z.literal('database'),
    /** Where a tenant lives; null for an unknown tenant. */
    resolve:
      fn<(tenantId: string) => Promise<ResolvedTenantPlacement | null> | ResolvedTenantPlacement | null>(
        'tenancy.resolve',
      ),
  }),
])

/** The tenancy config the app gives createKeel; the migrator reads `mode` and what that mode needs. */
export type TenancyOptions =
  | { mode: 'rls'; [key: string]: unknown }
  | {
      mode: 'schema'
      /** Maps a tenant id to its schema name. @default (id) => 'tenant_' + id */
      schemaFor?: (tenantId: string) => string
      /** Schemas searched after the tenant's own while its migrations run. @default [] */
      sharedSchemas?: string[]
      [key: string]: unknown
    }
  | {
      mode: 'database'
      /** Where a tenant lives; null for an unknown tenant. */
      resolve: (tenantId: string) => Promise<ResolvedTenantPlacement | null> | ResolvedTenantPlacement | null
      [key: string]: unknown
    }

/** A migration event: the CLI turns these into progress lines; apps can log them. */
export type MigrateEvent =
  | { type: 'scope-start'; tenant: string | null }
  | { type: 'scope-done'; tenant: string | null; applied: number; durationMs: number }
  | { type: 'scope-failed'; tenant: string | null; migration: string | null; error: Error }
  | { type: 'scope-skipped'; tenant: string; reason: string }
  | { type: 'scope-waiting'; tenant: string | null; reason: string }
  | { type: 'migration-applied'; tenant: string | null; migration: string; durationMs: number }
  | {
      type: 'lock-retry'
      tenant: string | null
      migration: string
      attempt: number
      delayMs: number
      blockers: Blocker[]
    }
  | { type: 'index-rebuilt'; tenant: string | null; index: string; action: 'reindex' | 'drop' }
  | { type: 'lint'; migration: string; rule: string; line: number; message: string }
  | { type: 'fleet-start'; tenants: number }
  | ({ type: 'backfill-progress'; tenant: string | null; migration: string } & BackfillProgress)
  | {
      type: 'backfill-waiting'
      tenant: string | null
      migration: string
      /** The replica furthest behind (application_name), and its replay lag. */
      replica: string | null
      lagMs: number
      maxReplicaLagMs: number
    }
  | { type: 'log'; tenant: string | null; migration: string; message: string }

/** A session holding the lock a migration statement waits for (pg_blocking_pids). */
export interface Blocker {
  pid: number
  user: string | null
  application: string | null
  state: string | null
  /** How long its transaction has been open, in ms. */
  transactionAgeMs: number | null
  query: string | null
}

export const migratorOptionsSchema = z.strictObject({
  /** The owner connection (a role allowed to run DDL; never the app's runtime role): ClientConfig. */
  connection: z.union([
    z
      .string()
      .min(1)
      .transform((connectionString) => ({ connectionString })),
    z.looseObject({}).transform((c) => c as ClientConfig),
  ]),
  /** The migrations folder: shared/NNNN_name.sql (once) and tenant/NNNN_name.sql (in each tenant scope). */
  dir: z.string().min(1),
  /** The tenancy config the app gives createKeel. @default { mode: 'rls' } (no tenant scopes) */
  tenancy: tenancyOptionsSchema.prefault({ mode: 'rls' }),
  /** The fleet: the tenant ids to migrate (schema and database modes). */
  tenants: z
    .union([z.array(z.string().min(1)), fn<() => Promise<readonly string[]> | readonly string[]>('tenants')])
    .optional(),
  /** lock_timeout of every migration statement. @default 500 */
  lockTimeoutMs: z.number().int().positive().default(500),
  /** Give up on a statement that keeps hitting lock_timeout after this long in total. @default 120000 */
  maxLockWaitMs: z.number().int().nonnegative().default(120_000),
  /** statement_timeout of transactional migration statements: a guard against a DDL that rewrites a huge table. @default 60000 */
  statementTimeoutMs: z.number().int().nonnegative().default(60_000),
  /** statement_timeout of non-transactional statements (CREATE INDEX CONCURRENTLY, ...); 0 = none. @default 0 */
  concurrentStatementTimeoutMs: z.number().int().nonnegative().default(0),
  /** Tenant scopes migrated at once (each holds one connection). @default 4 */
  concurrency: z.number().int().positive().max(256).default(4),
  /** Run the first N tenants first and stop the fleet if one of them fails. @default 0 (off) */
  canary: z.number().int().nonnegative().default(0),
  /** How long to wait for another runner that holds a scope. @default 300000 */
  scopeLockWaitMs: z.number().int().nonnegative().default(300_000),
  /** Lint pending migrations before running them: 'warn' reports findings as events, 'error' refuses to run. @default 'warn' */
  lint: z.enum(['off', 'warn', 'error']).default('warn'),
  /** Database mode: the owner connection of a tenant database. @default the resolved primary URL with `connection`'s user and password */
  tenantConnection:
    fn<(tenantId: string, placement: ResolvedTenantPlacement) => ClientConfig>('tenantConnection').optional(),
  /** Database mode: the database CREATE/DROP DATABASE connect to on the tenant's server. @default 'postgres' */
  maintenanceDatabase: z.string().min(1).default('postgres'),
  /** Called for every migration event (progress, lock retries with their blockers, lint findings). */
  onEvent: fn<(event: MigrateEvent) => void>('onEvent').optional(),
  /** ctx.backfill waits before a batch while a replica's replay lag exceeds this; 0 = no check. Keep it under the app's maxReplicaLagMs. @default 2000 */
  maxReplicaLagMs: z.number().int().nonnegative().default(2_000),
  /** Each fleet worker sleeps this long after a tenant: spreads the run out to leave the app CPU and I/O. @default 0 */
  pauseBetweenTenantsMs: z.number().int().nonnegative().max(60_000).default(0),
})

/** createMigrator's options (docs/migrate.md#options has the table). */
export interface MigratorOptions {
  /** The owner connection (a role allowed to run DDL; never the app's runtime role): a URL or ClientConfig. */
  connection: string | ClientConfig
  /** The migrations folder: shared/NNNN_name.sql (once) and tenant/NNNN_name.sql (in each tenant scope). */
  dir: string
  /** The tenancy config the app gives createKeel. @default { mode: 'rls' } */
  tenancy?: TenancyOptions
  /** The fleet (schema and database modes): tenant ids, or a function returning them. */
  tenants?: readonly string[] | (() => Promise<readonly string[]> | readonly string[])
  /** lock_timeout of every migration statement. @default 500 */
  lockTimeoutMs?: number
  /** Give up on a statement that keeps hitting lock_timeout after this long in total. @default 120000 */
  maxLockWaitMs?: number
  /** statement_timeout of transactional migrations. @default 60000 */
  statementTimeoutMs?: number
  /** statement_timeout of non-transactional statements (CREATE INDEX CONCURRENTLY, ...); 0 = none. @default 0 */
  concurrentStatementTimeoutMs?: number
  /** Tenant scopes migrated at once. @default 4 */
  concurrency?: number
  /** Run the first N tenants first; stop the fleet if one of them fails. @default 0 */
  canary?: number
  /** How long to wait for another runner holding a scope. @default 300000 */
  scopeLockWaitMs?: number
  /** Lint pending migrations before running them. @default 'warn' */
  lint?: 'off' | 'warn' | 'error'
  /** Database mode: the owner connection of a tenant database. @default resolve's URL with `connection`'s user and password */
  tenantConnection?: (tenantId: string, placement: ResolvedTenantPlacement) => ClientConfig
  /** Database mode: the database CREATE/DROP DATABASE connect to. @default 'postgres' */
  maintenanceDatabase?: string
  /** Every migration event: progress, lock retries with their blockers, lint findings, rebuilt indexes. */
  onEvent?: (event: MigrateEvent) => void
  /** ctx.backfill waits before a batch while a replica's replay lag exceeds this; 0 = no check. @default 2000 */
  maxReplicaLagMs?: number
  /** Each fleet worker sleeps this long after a tenant (leaves the app CPU on a busy server). @default 0 */
  pauseBetweenTenantsMs?: number
}

export type ResolvedMigratorOptions = z.output<typeof migratorOptionsSchema>
