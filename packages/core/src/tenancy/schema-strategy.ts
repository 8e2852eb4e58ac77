import { KeelError } from '../errors.js'
import type { ScopeStatement, TenancyStrategy } from './tenancy-strategy.js'

// `$1::regnamespace` raises 3F000 when the schema does not exist, so an unknown tenant fails the whole
// batch instead of silently falling back to the default search_path. Its text form comes back quoted.
const WITH_TIMEOUT =
  "SELECT set_config('search_path', $1::regnamespace::text || $2, true), set_config('statement_timeout', $3, true)"
const WITHOUT_TIMEOUT = "SELECT set_config('search_path', $1::regnamespace::text || $2, true)"

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/** Schema per tenant: search_path is set per statement (or per transaction) to the tenant's schema. */
export class SchemaStrategy implements TenancyStrategy {
  readonly mode = 'schema' as const
  readonly #schemaFor: (tenantId: string) => string
  readonly #suffix: string

  constructor(schemaFor: (tenantId: string) => string, sharedSchemas: readonly string[]) {
    this.#schemaFor = schemaFor
    this.#suffix = sharedSchemas.map((s) => `, ${quoteIdentifier(s)}`).join('')
  }

  schemaName(tenantId: string): string {
    const name = this.#schemaFor(tenantId)
    // Postgres cuts identifiers at 63 bytes (not characters): a longer name would silently name the
    // schema of another tenant whose name shares those bytes, so it is refused, never truncated.
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name, 'utf8') > 63) {
      throw new KeelError(
        'KEEL_TENANT_INVALID',
        `schemaFor(${JSON.stringify(tenantId)}) must return a name of 1 to 63 bytes (UTF-8)`,
        { details: { tenantId } },
      )
    }
    return name
  }

  validate(tenantId: string): void {
    this.schemaName(tenantId)
  }

  scope(tenantId: string, statementTimeoutMs: number): ScopeStatement {
    const schema = quoteIdentifier(this.schemaName(tenantId))
    return statementTimeoutMs > 0
      ? {
          name: 'keel_scope_schema_t',
          text: WITH_TIMEOUT,
          values: [schema, this.#suffix, String(statementTimeoutMs)],
        }
      : { name: 'keel_scope_schema', text: WITHOUT_TIMEOUT, values: [schema, this.#suffix] }
  }

  scopeError(tenantId: string, error: unknown): Error | undefined {
    if ((error as { code?: string } | null)?.code === '3F000') {
      return new KeelError(
        'KEEL_TENANT_SCHEMA_UNKNOWN',
        `schema for tenant ${JSON.stringify(tenantId)} does not exist (${this.schemaName(tenantId)})`,
        { cause: error, details: { tenantId, schema: this.schemaName(tenantId) } },
      )
    }
    return undefined
  }
}
