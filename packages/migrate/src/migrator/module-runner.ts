import type { ClientBase } from 'pg'
import { MigrateError } from '../errors.js'
import { type BackfillOptions, runBackfill } from './backfill.js'
import { type LedgerState, RECORD_SQL } from './ledger.js'
import type { BlockerProbe } from './lock-retry.js'
import { withLockRetry } from './lock-retry.js'
import type { Migration } from './migration-files.js'
import type { MigrationContext } from './module-migration.js'
import {
  applySettings,
  beginWithSettings,
  inTransaction,
  retryOptions,
  type ScopeOptions,
  type ScopeTarget,
  WHO,
} from './scope-session.js'

/**
 * Runs a .js/.mjs/.ts migration (ADR 0047). `transaction` true (the default): up(ctx) and the ledger row in
 * one transaction with lock_timeout, retried whole on lock_timeout, exactly like a .sql file. `transaction
 * = false`: up(ctx) on a plain session (lock_timeout and search_path set on it), a `progress` row marking
 * it started (so an edited file is caught mid-way), the ledger row once up() resolves. A killed run calls
 * up() again: what it did must be safe to do twice, which ctx.backfill is (it resumes from its state).
 */
export async function applyModule(
  target: ScopeTarget,
  migration: Migration,
  state: LedgerState,
  options: ScopeOptions,
  probe: BlockerProbe,
  session: { dirty: boolean },
): Promise<void> {
  const mod = await migration.load!()
  const { client } = target
  const started = performance.now()
  const retry = retryOptions(target, migration, options)
  const what = `${target.scope}: ${migration.id}`
  const record = () =>
    client.query(RECORD_SQL, [
      target.scope,
      migration.id,
      migration.checksum,
      Math.round(performance.now() - started),
      WHO,
    ])
  const context = (inTx: boolean): MigrationContext => ({
    tenant: target.tenant,
    scope: target.scope,
    schema: target.schema,
    migration: migration.id,
    client,
    inTransaction: inTx,
    transaction: async <T>(fn: (c: ClientBase) => Promise<T>): Promise<T> => {
      if (inTx) return fn(client)
      let out: T | undefined
      await withLockRetry(what, retry, probe, () =>
        inTransaction(client, beginWithSettings(target, options), async () => {
          out = await fn(client)
        }),
      )
      return out as T
    },
    backfill: (backfillOptions: BackfillOptions) => {
      if (inTx) {
        throw new MigrateError(
          'KEEL_MIGRATION_INVALID',
          `${migration.file}: ctx.backfill cannot run inside the migration's transaction (it would hold every batch's row locks until the end): add \`export const transaction = false\``,
          { details: { tenant: target.tenant, migration: migration.id } },
        )
      }
      return runBackfill(
        {
          client,
          scope: target.scope,
          tenant: target.tenant,
          migration: migration.id,
          checksum: migration.checksum,
          lockTimeoutMs: options.lockTimeoutMs,
          statementTimeoutMs: options.statementTimeoutMs,
          maxReplicaLagMs: options.maxReplicaLagMs,
          retry,
          probe,
          emit: options.emit,
        },
        backfillOptions,
      )
    },
    log: (message: string) =>
      options.emit({ type: 'log', tenant: target.tenant, migration: migration.id, message: String(message) }),
  })

  if (mod.transaction) {
    await withLockRetry(what, retry, probe, () =>
      inTransaction(client, beginWithSettings(target, options), async () => {
        await probe.watch(options.lockTimeoutMs, async () => mod.up(context(true)))
        await record()
      }),
    )
    return
  }

  session.dirty = true
  if (!state.progress.has(migration.id)) {
    await client.query(
      'INSERT INTO keel_migrate.progress (scope, id, checksum, step) VALUES ($1, $2, $3, 0) ON CONFLICT (scope, id) DO NOTHING',
      [target.scope, migration.id, migration.checksum],
    )
  }
  await applySettings(target, options.concurrentStatementTimeoutMs, options.lockTimeoutMs, false)
  await mod.up(context(false))
  // up() may have left the session anywhere: back to the scope's settings for the bookkeeping.
  await client.query('ROLLBACK').catch(() => undefined)
  await inTransaction(client, 'BEGIN', async () => {
    await record()
    await client.query('DELETE FROM keel_migrate.progress WHERE scope = $1 AND id = $2', [
      target.scope,
      migration.id,
    ])
    await client.query('DELETE FROM keel_migrate.backfill WHERE scope = $1 AND id = $2', [
      target.scope,
      migration.id,
    ])
  })
}
