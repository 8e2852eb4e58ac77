import { hostname, userInfo } from 'node:os'
import type { Client, ClientBase } from 'pg'
import type { Blocker, MigrateEvent, ResolvedMigratorOptions } from '../config/migrator-options.js'
import type { Migration } from './migration-files.js'

// What a scope's run shares between its SQL path (scope-runner.ts) and its module path
// (module-runner.ts): where it runs, its options, and the session settings and transaction every
// migration of the scope runs under.

/** Where one scope's migrations run: the tenant (null for shared), its ledger scope and its schema. */
export interface ScopeTarget {
  tenant: string | null
  /** The ledger key: 'shared', 'schema:<name>' or 'database'. */
  scope: string
  /** The schema the scope's objects live in; undefined = the connection's default search_path. */
  schema: string | undefined
  /** Schemas searched after `schema` (tenancy.sharedSchemas). */
  extraSchemas: readonly string[]
  client: ClientBase
  /** Opens a second connection to the same database, for blocker probes. */
  connectMonitor(): Promise<Client>
}

export type ScopeOptions = Pick<
  ResolvedMigratorOptions,
  | 'lockTimeoutMs'
  | 'maxLockWaitMs'
  | 'statementTimeoutMs'
  | 'concurrentStatementTimeoutMs'
  | 'scopeLockWaitMs'
  | 'lint'
  | 'maxReplicaLagMs'
> & { emit(event: MigrateEvent): void; lintedOnce: Set<string> }

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

export const WHO = `${userInfo().username}@${hostname()} pid ${process.pid}`
const SETTINGS =
  "SELECT set_config('lock_timeout', $1, $4), set_config('statement_timeout', $2, $4), set_config('search_path', $3, $4)"

function searchPath(target: ScopeTarget): string {
  if (target.schema === undefined) return ''
  return [target.schema, ...target.extraSchemas].map(quoteIdent).join(', ')
}

/** lock_timeout, statement_timeout and search_path, for the transaction (local) or the session. */
export async function applySettings(
  target: ScopeTarget,
  timeoutMs: number,
  lockTimeoutMs: number,
  local: boolean,
) {
  const path = searchPath(target)
  if (path === '') {
    await target.client.query(
      "SELECT set_config('lock_timeout', $1, $3), set_config('statement_timeout', $2, $3)",
      [`${lockTimeoutMs}ms`, `${timeoutMs}ms`, local],
    )
  } else {
    await target.client.query(SETTINGS, [`${lockTimeoutMs}ms`, `${timeoutMs}ms`, path, local])
  }
}

export function retryOptions(target: ScopeTarget, migration: Migration, options: ScopeOptions) {
  return {
    lockTimeoutMs: options.lockTimeoutMs,
    maxLockWaitMs: options.maxLockWaitMs,
    onRetry: (attempt: number, delayMs: number, blockers: Blocker[]) =>
      options.emit({
        type: 'lock-retry',
        tenant: target.tenant,
        migration: migration.id,
        attempt,
        delayMs,
        blockers,
      }),
  }
}

/**
 * BEGIN and the transaction's settings in one round trip (simple protocol, several statements): the values
 * are integers and identifiers quoted by quoteIdent, never input text.
 */
export function beginWithSettings(target: ScopeTarget, options: ScopeOptions): string {
  const path = searchPath(target)
  return `BEGIN; SET LOCAL lock_timeout = ${Math.trunc(options.lockTimeoutMs)}; SET LOCAL statement_timeout = ${Math.trunc(options.statementTimeoutMs)}${path === '' ? '' : `; SET LOCAL search_path = ${path}`}`
}

export async function inTransaction(
  client: ClientBase,
  begin: string,
  body: () => Promise<void>,
): Promise<void> {
  await client.query(begin)
  try {
    await body()
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined)
    throw error
  }
}
