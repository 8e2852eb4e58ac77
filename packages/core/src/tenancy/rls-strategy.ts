import type { ScopeStatement, TenancyStrategy } from './tenancy-strategy.js'

const WITH_TIMEOUT = 'SELECT set_config($1, $2, true), set_config($3, $4, true)'
const WITHOUT_TIMEOUT = 'SELECT set_config($1, $2, true)'

/** Shared schema, row-level security: the tenant id rides in a transaction-local custom setting. */
export class RlsStrategy implements TenancyStrategy {
  readonly mode = 'rls' as const
  readonly #setting: string

  constructor(setting: string) {
    this.#setting = setting
  }

  scope(tenantId: string, statementTimeoutMs: number): ScopeStatement {
    return statementTimeoutMs > 0
      ? {
          name: 'keel_scope_rls_t',
          text: WITH_TIMEOUT,
          values: [this.#setting, tenantId, 'statement_timeout', String(statementTimeoutMs)],
        }
      : { name: 'keel_scope_rls', text: WITHOUT_TIMEOUT, values: [this.#setting, tenantId] }
  }

  scopeError(): undefined {
    return undefined
  }
}
