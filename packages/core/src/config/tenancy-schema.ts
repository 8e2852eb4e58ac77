import { z } from 'zod'

// The tenancy branch of createKeel's config: rls or schema (database arrives with issue #13).

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
export const tenancySchema = z.discriminatedUnion('mode', [rlsSchema, schemaSchema], {
  error: (issue) =>
    issue.code === 'invalid_union'
      ? "must be 'rls' or 'schema' ('database', a database per tenant, is not available in this release)"
      : undefined,
})
