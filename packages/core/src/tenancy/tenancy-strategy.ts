/**
 * How a tenant's scope reaches Postgres. Each statement keel sends is preceded, in the same batch and
 * before the one Sync, by this statement: it runs inside the statement's implicit transaction, so its
 * transaction-local settings vanish at Sync and can never outlive the call on a pooled connection.
 */
export interface ScopeStatement {
  /** Prepared once per connection under this name. */
  readonly name: string
  readonly text: string
  readonly values: readonly unknown[]
}

export interface TenancyStrategy {
  readonly mode: 'rls' | 'schema' | 'database'
  /** The statement that scopes one statement (or one transaction) to the tenant. */
  scope(tenantId: string, statementTimeoutMs: number): ScopeStatement
  /** Refuses, with KEEL_TENANT_INVALID, an id this strategy cannot place, before any SQL is sent. */
  validate?(tenantId: string): void
  /** Turns an error raised by the scope statement into a keel error, or returns undefined. */
  scopeError(tenantId: string, error: unknown): Error | undefined
}
