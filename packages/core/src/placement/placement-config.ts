import { z } from 'zod'
import { hostSchema, replicaSchema } from '../config/postgres-schema.js'
import type { TenantPlacement } from '../config/tenancy-schema.js'
import { KeelError } from '../errors.js'

const placementSchema = z.strictObject({
  primary: hostSchema,
  replicas: z.array(replicaSchema).max(64).default([]),
  isolation: z.enum(['database', 'rls', 'schema']).default('database'),
  schema: z
    .string()
    .min(1)
    .refine((s) => Buffer.byteLength(s, 'utf8') <= 63, 'at most 63 bytes: Postgres truncates longer names')
    .optional(),
})

export type CheckedPlacement = z.output<typeof placementSchema>

/**
 * What tenancy.resolve returned for `tenantId`, checked: a malformed placement is the resolver's bug,
 * reported with the fields at fault (never their values: a connection string carries a password).
 */
export function checkPlacement(tenantId: string, value: TenantPlacement): CheckedPlacement {
  const parsed = placementSchema.safeParse(value)
  if (parsed.success) return parsed.data
  const fields = parsed.error.issues.map((i) => i.path.join('.'))
  throw new KeelError(
    'KEEL_TENANT_RESOLVE_FAILED',
    `tenancy.resolve(${JSON.stringify(tenantId)}) returned an invalid placement: ${parsed.error.issues
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ')}`,
    { details: { tenantId, fields } },
  )
}
