import { z } from 'zod'
import type { HostConfig } from '../pool/host-info.js'

// The tenancy branch of createKeel's config: rls, schema, or database (each tenant resolved to where it
// lives, ADR 0032/0033).

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

/** Where one tenant lives, as `tenancy.resolve` returns it (checked by placement/placement-config.ts). */
export interface TenantPlacement {
  /** The tenant's primary: its own database, or a shared one (isolation 'rls' or 'schema'). */
  primary: HostConfig
  /** Streaming replicas of that primary's server, reaching the same database. */
  replicas?: ReadonlyArray<HostConfig & { name?: string | undefined }> | undefined
  /**
   * How statements are scoped there: 'database' (the database is the boundary: nothing to scope),
   * 'rls' (a shared database under row-level security, as in rls mode) or 'schema' (the tenant's schema
   * in a shared database). @default 'database'
   */
  isolation?: 'database' | 'rls' | 'schema' | undefined
  /** isolation 'schema': the tenant's schema. @default `tenant_${id}` */
  schema?: string | undefined
}

export type TenantResolver = (
  tenantId: string,
) => TenantPlacement | null | undefined | Promise<TenantPlacement | null | undefined>

const databaseSchema = z.strictObject({
  mode: z.literal('database'),
  /**
   * Where a tenant lives: its placement, or null for a tenant that does not exist (KEEL_TENANT_UNKNOWN,
   * nothing sent). Called once per tenant and cached (resolveCacheTtlMs, resolveCacheMax); concurrent
   * calls for one tenant share one resolution.
   */
  resolve: z.custom<TenantResolver>((v) => typeof v === 'function', { message: 'must be a function' }),
  /**
   * This process's connections per Postgres server (host:port), every tenant database on it together,
   * the replica monitor's included. @default 50
   */
  maxConnections: z.number().int().min(2).max(100_000).default(50),
  /** How long a resolved placement is reused before resolve() is asked again. @default 60000 */
  resolveCacheTtlMs: z.number().int().min(0).default(60_000),
  /** Placements kept (least recently used dropped first). @default 10000 */
  resolveCacheMax: z.number().int().min(1).max(10_000_000).default(10_000),
  /** A resolve() that has not settled by then fails the call with KEEL_TENANT_RESOLVE_FAILED. @default 5000 */
  resolveTimeoutMs: z.number().int().min(1).default(5_000),
  /** Placements with isolation 'rls': the setting their policies read. @default 'app.tenant_id' */
  setting: settingName.default('app.tenant_id'),
  /** Placements with isolation 'rls': see rls mode. @default false */
  allowBypassRole: z.boolean().default(false),
  /** Placements with isolation 'schema': schemas searched after the tenant's own. @default [] */
  sharedSchemas: schemaSchema.shape.sharedSchemas,
})

export const tenancySchema = z.discriminatedUnion('mode', [rlsSchema, schemaSchema, databaseSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? "must be 'rls', 'schema' or 'database'" : undefined),
})
