import { z } from 'zod'
import { KeelError } from '../errors.js'

// The limits branch of createKeel's config, and how a tenant's share of the pool becomes a count.

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

export const limitsSchema = z.strictObject({
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

export function resolveLimits(limits: z.output<typeof limitsSchema>, poolMax: number): ResolvedLimits {
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
