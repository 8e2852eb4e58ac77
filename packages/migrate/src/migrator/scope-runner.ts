// One scope's run, kept in one file (~400 lines) because its steps share one protocol: the scope's
// advisory lock, the ledger read and checksum check, then each pending migration applied by its kind
// (in a transaction with the ledger row, stepwise for CONCURRENTLY, or as a module via module-runner)
// with the same lock_timeout settings and retry, and the INVALID-index repair the stepwise path needs.
// The module path already lives apart (module-runner.ts); what is left is the SQL path end to end.
import type { ClientBase } from 'pg'
import { MigrateError } from '../errors.js'
import { lintStatements } from '../lint/lint-sql.js'
import { isNonTransactional, type ParsedStatement } from '../sql/parse-sql.js'
import { type LedgerState, LOCK_CLASS, RECORD_SQL, readLedger } from './ledger.js'
import { BlockerProbe, withLockRetry } from './lock-retry.js'
import type { Migration } from './migration-files.js'
import { applyModule } from './module-runner.js'
import {
  applySettings,
  beginWithSettings,
  inTransaction,
  quoteIdent,
  retryOptions,
  type ScopeOptions,
  type ScopeTarget,
  WHO,
} from './scope-session.js'

export interface AppliedMigration {
  tenant: string | null
  migration: string
  durationMs: number
}

export interface ScopeResult {
  applied: AppliedMigration[]
  rebuiltIndexes: string[]
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Migrates one scope under its advisory lock: two runners never migrate the same scope at once. */
export async function runScope(
  target: ScopeTarget,
  migrations: readonly Migration[],
  options: ScopeOptions,
): Promise<ScopeResult> {
  const { client } = target
  const pid = await acquireScopeLock(target, options)
  const probe = new BlockerProbe(() => target.connectMonitor(), pid)
  // Session settings (lock_timeout, search_path) set by non-transactional steps: reset before release.
  const session = { dirty: false }
  let current: string | null = null
  try {
    const state = await readLedger(client, target.scope)
    checkChecksums(target, migrations, state)
    const applied: AppliedMigration[] = []
    for (const migration of migrations) {
      if (state.applied.has(migration.id)) continue
      current = migration.id
      lintBeforeRun(migration, options)
      const started = performance.now()
      if (migration.load !== undefined) {
        await applyModule(target, migration, state, options, probe, session)
      } else if (migration.nonTransactional) {
        session.dirty = true
        await applyStepwise(target, migration, state, options, probe)
      } else await applyInTransaction(target, migration, options, probe, started)
      const durationMs = Math.round(performance.now() - started)
      applied.push({ tenant: target.tenant, migration: migration.id, durationMs })
      options.emit({ type: 'migration-applied', tenant: target.tenant, migration: migration.id, durationMs })
    }
    current = null
    const rebuiltIndexes = await rebuildInvalidIndexes(target, options, probe, session)
    if (state.failure !== undefined)
      await client.query('DELETE FROM keel_migrate.failure WHERE scope = $1', [target.scope])
    return { applied, rebuiltIndexes }
  } catch (error) {
    await recordFailure(client, target.scope, current, error)
    if (error instanceof MigrateError) throw error
    throw new MigrateError(
      'KEEL_MIGRATION_FAILED',
      `${target.tenant === null ? 'shared' : `tenant ${JSON.stringify(target.tenant)}`}: ${current ?? 'index rebuild'} failed: ${(error as Error).message}`,
      {
        cause: error,
        details: { tenant: target.tenant, migration: current, sqlstate: (error as { code?: string }).code },
      },
    )
  } finally {
    await probe.close()
    if (session.dirty) await client.query('RESET ALL').catch(() => undefined)
    await client
      .query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_CLASS, target.scope])
      .catch(() => undefined)
  }
}

/** Takes the scope's session advisory lock (naming the session keel-migrate on the way); returns the backend pid. */
async function acquireScopeLock(target: ScopeTarget, options: ScopeOptions): Promise<number> {
  const started = Date.now()
  let announced = false
  for (;;) {
    const got = await target.client.query<{ ok: boolean; pid: number }>(
      "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok, pg_backend_pid() AS pid, set_config('application_name', 'keel-migrate', false)",
      [LOCK_CLASS, target.scope],
    )
    if (got.rows[0]?.ok === true) return got.rows[0].pid
    if (Date.now() - started >= options.scopeLockWaitMs) {
      throw new MigrateError(
        'KEEL_MIGRATE_SCOPE_BUSY',
        `another runner has been migrating ${target.scope} for more than ${options.scopeLockWaitMs} ms`,
        { details: { tenant: target.tenant, scope: target.scope } },
      )
    }
    if (!announced) {
      announced = true
      options.emit({
        type: 'scope-waiting',
        tenant: target.tenant,
        reason: 'another runner is migrating this scope',
      })
    }
    await sleep(200)
  }
}

function checkChecksums(target: ScopeTarget, migrations: readonly Migration[], state: LedgerState): void {
  for (const migration of migrations) {
    const row = state.applied.get(migration.id) ?? state.progress.get(migration.id)
    if (row === undefined || row.checksum === migration.checksum) continue
    throw new MigrateError(
      'KEEL_MIGRATION_CHECKSUM_MISMATCH',
      `${migration.file} changed after it was ${state.applied.has(migration.id) ? 'applied' : 'started'} in ${target.scope}: write a new migration instead of editing an applied one`,
      {
        details: {
          tenant: target.tenant,
          migration: migration.id,
          ledger: row.checksum,
          file: migration.checksum,
        },
      },
    )
  }
}

function lintBeforeRun(migration: Migration, options: ScopeOptions): void {
  if (options.lint === 'off' || migration.load !== undefined) return
  const findings = lintStatements(migration.statements, migration.sql)
  if (findings.length > 0 && options.lint === 'error') {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `${migration.file}: ${findings.map((f) => `line ${f.line} ${f.rule}`).join(', ')} (lint: 'error'; see keel migrate lint)`,
      { details: { migration: migration.id, findings } },
    )
  }
  if (options.lintedOnce.has(migration.id)) return
  options.lintedOnce.add(migration.id)
  for (const f of findings)
    options.emit({ type: 'lint', migration: migration.id, rule: f.rule, line: f.line, message: f.message })
}

/** The whole file and its ledger row in one transaction: applied exactly once, or not at all. */
async function applyInTransaction(
  target: ScopeTarget,
  migration: Migration,
  options: ScopeOptions,
  probe: BlockerProbe,
  started: number,
): Promise<void> {
  const what = `${target.scope}: ${migration.id}`
  await withLockRetry(what, retryOptions(target, migration, options), probe, () =>
    inTransaction(target.client, beginWithSettings(target, options), async () => {
      await probe.watch(options.lockTimeoutMs, () => target.client.query(migration.sql))
      await target.client.query(RECORD_SQL, [
        target.scope,
        migration.id,
        migration.checksum,
        Math.round(performance.now() - started),
        WHO,
      ])
    }),
  )
}

/**
 * A file with a statement Postgres refuses in a transaction (CREATE INDEX CONCURRENTLY, ...): each statement
 * on its own, the step reached recorded in keel_migrate.progress, so a killed run resumes at that statement.
 * A concurrent index found INVALID (its build was killed or failed) is dropped and built again; one found
 * valid was built before the kill, and is not built twice.
 */
async function applyStepwise(
  target: ScopeTarget,
  migration: Migration,
  state: LedgerState,
  options: ScopeOptions,
  probe: BlockerProbe,
): Promise<void> {
  const { client } = target
  const started = performance.now()
  const retry = retryOptions(target, migration, options)
  const what = `${target.scope}: ${migration.id}`
  const saveStep =
    'INSERT INTO keel_migrate.progress (scope, id, checksum, step) VALUES ($1, $2, $3, $4) ON CONFLICT (scope, id) DO UPDATE SET step = excluded.step'
  const first = state.progress.get(migration.id)?.step ?? 0
  for (let step = first; step < migration.statements.length; step++) {
    const statement = migration.statements[step]!
    const values = [target.scope, migration.id, migration.checksum, step + 1]
    if (isNonTransactional(statement)) {
      await withLockRetry(`${what} line ${statement.line}`, retry, probe, async () => {
        await applySettings(target, options.concurrentStatementTimeoutMs, options.lockTimeoutMs, false)
        if (statement.type === 'IndexStmt' && (await concurrentIndexDone(target, statement, options))) return
        await probe.watch(options.lockTimeoutMs, () => client.query(statement.text))
      })
      await client.query(saveStep, values)
    } else {
      await withLockRetry(`${what} line ${statement.line}`, retry, probe, () =>
        inTransaction(client, beginWithSettings(target, options), async () => {
          await probe.watch(options.lockTimeoutMs, () => client.query(statement.text))
          await client.query(saveStep, values)
        }),
      )
    }
  }
  await inTransaction(client, 'BEGIN', async () => {
    await client.query(RECORD_SQL, [
      target.scope,
      migration.id,
      migration.checksum,
      Math.round(performance.now() - started),
      WHO,
    ])
    await client.query('DELETE FROM keel_migrate.progress WHERE scope = $1 AND id = $2', [
      target.scope,
      migration.id,
    ])
  })
}

const INDEX_STATE = `SELECT i.indisvalid AS valid, n.nspname AS schema FROM pg_class c
  JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())`

/** True when the index exists and is valid (nothing to do); drops it when it exists INVALID. */
async function concurrentIndexDone(target: ScopeTarget, statement: ParsedStatement, options: ScopeOptions) {
  const name = String(statement.node.idxname)
  const schema = (statement.node.relation as { schemaname?: string } | undefined)?.schemaname ?? null
  const found = await target.client.query<{ valid: boolean; schema: string }>(INDEX_STATE, [name, schema])
  const row = found.rows[0]
  if (row === undefined) return false
  if (row.valid) return true
  const qualified = `${quoteIdent(row.schema)}.${quoteIdent(name)}`
  await target.client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${qualified}`)
  options.emit({ type: 'index-rebuilt', tenant: target.tenant, index: qualified, action: 'drop' })
  return false
}

const INVALID_INDEXES = `SELECT n.nspname AS schema, c.relname AS name FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
  WHERE NOT i.indisvalid AND t.relkind <> 'p' AND n.nspname = ANY ($1::text[])`

/**
 * INVALID indexes left in the scope by a killed or failed concurrent build (also one the app ran by hand):
 * rebuilt with REINDEX CONCURRENTLY; the `_ccnew` leftovers of a failed REINDEX CONCURRENTLY are dropped.
 */
async function rebuildInvalidIndexes(
  target: ScopeTarget,
  options: ScopeOptions,
  probe: BlockerProbe,
  session: { dirty: boolean },
) {
  const { client } = target
  if (session.dirty && target.schema === undefined) {
    // current_schemas() below must be the connection's default path, not a step's.
    await client.query('RESET ALL')
    await client.query("SET application_name = 'keel-migrate'")
    session.dirty = false
  }
  const schemas =
    target.schema === undefined
      ? (await client.query<{ s: string[] }>('SELECT current_schemas(false) AS s')).rows[0]!.s
      : [target.schema]
  const invalid = await client.query<{ schema: string; name: string }>(INVALID_INDEXES, [schemas])
  const rebuilt: string[] = []
  for (const row of invalid.rows) {
    const qualified = `${quoteIdent(row.schema)}.${quoteIdent(row.name)}`
    const drop = /_ccnew\d*$/.test(row.name)
    await withLockRetry(
      `${target.scope}: rebuild ${qualified}`,
      {
        lockTimeoutMs: options.lockTimeoutMs,
        maxLockWaitMs: options.maxLockWaitMs,
        onRetry: () => undefined,
      },
      probe,
      async () => {
        session.dirty = true
        await client.query("SELECT set_config('lock_timeout', $1, false)", [`${options.lockTimeoutMs}ms`])
        await client.query(
          drop ? `DROP INDEX CONCURRENTLY IF EXISTS ${qualified}` : `REINDEX INDEX CONCURRENTLY ${qualified}`,
        )
      },
    )
    rebuilt.push(qualified)
    options.emit({
      type: 'index-rebuilt',
      tenant: target.tenant,
      index: qualified,
      action: drop ? 'drop' : 'reindex',
    })
  }
  return rebuilt
}

async function recordFailure(client: ClientBase, scope: string, id: string | null, error: unknown) {
  await client.query('ROLLBACK').catch(() => undefined)
  await client
    .query(
      'INSERT INTO keel_migrate.failure (scope, id, error) VALUES ($1, $2, $3) ON CONFLICT (scope) DO UPDATE SET id = excluded.id, error = excluded.error, failed_at = now()',
      [scope, id, String((error as Error).message ?? error).slice(0, 2000)],
    )
    .catch(() => undefined)
}
