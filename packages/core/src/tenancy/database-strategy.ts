import type { ScopeStatement, TenancyStrategy } from './tenancy-strategy.js'

const SCOPE = "SELECT set_config('statement_timeout', $1, true)"

/**
 * A database of the tenant's own: the connection's database is the boundary, so nothing names the
 * tenant. The prelude still carries the statement timeout (0 = none), transaction-local like every
 * scope, so batches keep one shape in every placement.
 */
export class DatabaseStrategy implements TenancyStrategy {
  readonly mode = 'database' as const

  scope(_tenantId: string, statementTimeoutMs: number): ScopeStatement {
    return { name: 'keel_scope_db', text: SCOPE, values: [String(statementTimeoutMs)] }
  }

  scopeError(): undefined {
    return undefined
  }
}
