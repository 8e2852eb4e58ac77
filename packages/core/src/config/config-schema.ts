import { z } from 'zod'
import { limitsSchema, resolveLimits } from './limits-schema.js'
import { postgresSchema } from './postgres-schema.js'
import { cacheSchema, jobsSchema } from './redis-schemas.js'
import { tenancySchema } from './tenancy-schema.js'

export type { ResolvedLimits, TenantConnections, TenantLimitsOverride } from './limits-schema.js'

const TENANT_ID_DEFAULT = /^[A-Za-z0-9_-]{1,63}$/

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
  .superRefine((config, ctx) => {
    if (config.tenancy.mode !== 'database' && config.postgres.primary === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['postgres', 'primary'],
        message: "is required unless tenancy.mode is 'database'",
      })
    }
    if (config.tenancy.mode === 'database' && config.postgres.replicas.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['postgres', 'replicas'],
        message: "in database mode each tenant's replicas come from tenancy.resolve",
      })
    }
  })
  // A share of connections needs pool.max, which lives in another branch of the config.
  .transform(({ limits, ...config }) => ({
    ...config,
    limits: resolveLimits(limits, config.postgres.pool.max),
  }))

export type KeelConfig = z.input<typeof configSchema>
export type ResolvedConfig = z.output<typeof configSchema>
