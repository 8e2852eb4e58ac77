// One piece (~300 lines): a backfill's keyset batches, its persisted resume state and its lag throttle share
// the state row and the key's type; split, each part would need the others' internals (ADR 0048).
import type { ClientBase } from 'pg'
import { z } from 'zod'
import type { MigrateEvent } from '../config/migrator-options.js'
import { MigrateError } from '../errors.js'
import type { BackfillProgress } from './backfill-progress.js'
import { type BlockerProbe, type LockRetryOptions, withLockRetry } from './lock-retry.js'
import { primaryReplicaLag } from './replica-lag.js'

/** ctx.backfill's options (docs/migrate.md#backfills). */
export interface BackfillOptions {
  /** The table, resolved on the scope's search_path ('orders', or 'app.orders'). */
  table: string
  /** Column -> SQL expression evaluated per row (`{ email_lower: 'lower(email)' }`). Or pass `update`. */
  set?: Record<string, string>
  /**
   * Custom batch: called in the batch's transaction with the key range (`from` exclusive, null on the first
   * batch; `to` inclusive, as text); returns the rows it changed (a number; anything else counts 0). Instead of `set`.
   */
  update?: (client: ClientBase, range: { from: string | null; to: string }) => Promise<unknown>
  /** SQL predicate: only rows matching it are updated (`'email_lower IS NULL'`). */
  where?: string
  /** The keyset column: unique, indexed, orderable. @default the table's one-column primary key */
  key?: string
  /** Keys per batch (each batch is one short transaction). @default 1000 */
  batchSize?: number
  /** Wait before a batch while a replica's replay lag exceeds this; 0 = no lag check. @default the migrator's maxReplicaLagMs (2000) */
  maxReplicaLagMs?: number
  /** Sleep between batches. @default 0 */
  pauseMs?: number
  /** The state row's name within the migration, for two backfills of one table. @default table */
  name?: string
  /** Called after each batch, and while it waits for lag. */
  onProgress?: (progress: BackfillProgress) => void
}

/** What ctx.backfill resolves with. */
export interface BackfillResult {
  /** The table as given to ctx.backfill. */
  table: string
  /** Rows updated, over every run of this backfill (a killed run's batches included). */
  rowsUpdated: number
  /** Batches committed, over every run. */
  batches: number
  /** It continued a run that was killed or failed. */
  resumed: boolean
  /** Time spent waiting for replica lag in this run. */
  waitedForLagMs: number
}

const optionsSchema = z.strictObject({
  table: z.string().min(1),
  set: z.record(z.string().min(1), z.string().min(1)).optional(),
  update: z.custom<BackfillOptions['update']>((v) => typeof v === 'function').optional(),
  where: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  batchSize: z.number().int().positive().max(1_000_000).default(1000),
  maxReplicaLagMs: z.number().int().nonnegative().optional(),
  pauseMs: z.number().int().nonnegative().default(0),
  name: z.string().min(1).max(200).optional(),
  onProgress: z.custom<BackfillOptions['onProgress']>((v) => typeof v === 'function').optional(),
})

/** What the migration runner hands a backfill: its scope, its connection, and the migrator's settings. */
export interface BackfillScope {
  client: ClientBase
  scope: string
  tenant: string | null
  migration: string
  checksum: string
  lockTimeoutMs: number
  statementTimeoutMs: number
  maxReplicaLagMs: number
  retry: LockRetryOptions
  probe: BlockerProbe
  emit(event: MigrateEvent): void
}

const LAG_POLL_MS = 500
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const quote = (name: string) => `"${name.replace(/"/g, '""')}"`

interface StateRow {
  upper_key: string | null
  last_key: string | null
  rows_done: string
  batches: number
  total_estimate: string
  done: boolean
}

/**
 * Keyset batches `key > last AND key <= upper`, `batchSize` keys each, every batch in a transaction of its
 * own with lock_timeout (retried on 55P03) and statement_timeout, its progress written in that same
 * transaction: a batch is applied and recorded exactly once, and a killed run resumes after the last
 * batch that committed. `upper` is the max key when the backfill first started, kept in the state row:
 * rows inserted later (above it) are never touched. Before each batch it waits while a replica's replay
 * lag exceeds maxReplicaLagMs.
 */
export async function runBackfill(scope: BackfillScope, input: BackfillOptions): Promise<BackfillResult> {
  const parsed = optionsSchema.safeParse(input)
  if (!parsed.success) {
    throw new MigrateError('KEEL_MIGRATION_INVALID', `backfill options: ${z.prettifyError(parsed.error)}`, {
      details: { migration: scope.migration },
    })
  }
  const o = parsed.data
  if ((o.set === undefined) === (o.update === undefined)) {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      `backfill of ${o.table}: pass exactly one of set or update`,
      {
        details: { migration: scope.migration },
      },
    )
  }
  const { client } = scope
  const maxLag = o.maxReplicaLagMs ?? scope.maxReplicaLagMs
  const name = o.name ?? o.table
  const { table, key, keyType } = await resolveTarget(client, o.table, o.key, scope.migration)

  // The state row: created at the first start (with the max key then), found again after a kill.
  const stateKey = [scope.scope, scope.migration, name]
  let state = (
    await client.query<StateRow>(
      'SELECT upper_key, last_key, rows_done::text, batches, total_estimate::text, done FROM keel_migrate.backfill WHERE scope = $1 AND id = $2 AND name = $3',
      stateKey,
    )
  ).rows[0]
  const resumed = state !== undefined
  if (state === undefined) {
    // ORDER BY ... DESC LIMIT 1 rather than max(): uuid (among others) has no max() before Postgres 18.
    const upper =
      (
        await client.query<{ k: string | null }>(
          `SELECT ${key}::text AS k FROM ${table} ORDER BY ${key} DESC LIMIT 1`,
        )
      ).rows[0]?.k ?? null
    const total = upper === null ? 0 : await estimateRows(client, table, key, keyType, upper)
    state = (
      await client.query<StateRow>(
        `INSERT INTO keel_migrate.backfill (scope, id, name, checksum, upper_key, total_estimate, done)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING upper_key, last_key, rows_done::text, batches, total_estimate::text, done`,
        [...stateKey, scope.checksum, upper, total, upper === null],
      )
    ).rows[0]!
  }
  let rowsDone = Number(state.rows_done)
  let batches = state.batches
  let last = state.last_key
  const upper = state.upper_key
  const totalEstimate = Number(state.total_estimate)
  const started = performance.now()
  const rowsAtStart = rowsDone
  let waitedForLagMs = 0

  const report = (waiting?: BackfillProgress['waiting']) => {
    const elapsed = (performance.now() - started) / 1_000
    const rate = elapsed > 0 ? (rowsDone - rowsAtStart) / elapsed : 0
    const left = Math.max(totalEstimate - rowsDone, 0)
    const progress: BackfillProgress = {
      table: o.table,
      rowsDone,
      totalEstimate,
      batches,
      rate,
      etaMs: rate > 0 ? Math.round((left / rate) * 1_000) : undefined,
      ...(waiting && { waiting }),
    }
    try {
      o.onProgress?.(progress)
    } catch {
      // A throwing progress callback must not fail the backfill.
    }
    scope.emit({ type: 'backfill-progress', tenant: scope.tenant, migration: scope.migration, ...progress })
  }

  const k = key
  // The batch's key range and its parameters: `key > from` (none on the first batch) `AND key <= to`.
  const range = (from: string | null, to: string): [string, string[]] =>
    from === null
      ? [`${k} <= $1::text::${keyType}`, [to]]
      : [`${k} > $1::text::${keyType} AND ${k} <= $2::text::${keyType}`, [from, to]]
  const setList =
    o.set === undefined
      ? ''
      : Object.entries(o.set)
          .map(([column, expression]) => `${quote(column)} = ${expression}`)
          .join(', ')

  while (!state.done && upper !== null) {
    if (maxLag > 0) waitedForLagMs += await waitForReplicas(scope, maxLag, report)
    const from = last
    let hi: string | null = null
    let changed = 0
    const what = `${scope.scope}: ${scope.migration} backfill ${o.table}`
    await withLockRetry(what, scope.retry, scope.probe, async () => {
      await client.query(
        `BEGIN; SET LOCAL lock_timeout = ${Math.trunc(scope.lockTimeoutMs)}; SET LOCAL statement_timeout = ${Math.trunc(scope.statementTimeoutMs)}`,
      )
      try {
        const [bounds, boundParams] = range(from, upper)
        hi =
          (
            await client.query<{ hi: string | null }>(
              `SELECT ${k}::text AS hi FROM (SELECT ${k} FROM ${table} WHERE ${bounds} ORDER BY ${k} LIMIT ${o.batchSize}) b ORDER BY ${k} DESC LIMIT 1`,
              boundParams,
            )
          ).rows[0]?.hi ?? null
        changed = 0
        if (hi !== null) {
          if (o.update !== undefined) {
            const n = await scope.probe.watch(scope.lockTimeoutMs, () => o.update!(client, { from, to: hi! }))
            changed = typeof n === 'number' ? n : 0
          } else {
            const [rows, rowParams] = range(from, hi)
            const sql = `UPDATE ${table} SET ${setList} WHERE ${rows}${o.where === undefined ? '' : ` AND (${o.where})`}`
            changed =
              (await scope.probe.watch(scope.lockTimeoutMs, () => client.query(sql, rowParams))).rowCount ?? 0
          }
        }
        await client.query(
          `UPDATE keel_migrate.backfill SET last_key = coalesce($4, last_key), rows_done = rows_done + $5,
             batches = batches + $6, done = ($4::text IS NULL OR $4::text = upper_key), updated_at = now()
           WHERE scope = $1 AND id = $2 AND name = $3`,
          [...stateKey, hi, changed, hi === null ? 0 : 1],
        )
        await client.query('COMMIT')
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined)
        throw error
      }
    })
    if (hi === null) break
    last = hi
    rowsDone += changed
    batches++
    report()
    if (hi === upper) break
    if (o.pauseMs > 0) await sleep(o.pauseMs)
  }
  return { table: o.table, rowsUpdated: rowsDone, batches, resumed, waitedForLagMs }
}

/** Waits while a replica lags more than maxLag, reporting why; returns the time waited. */
async function waitForReplicas(
  scope: BackfillScope,
  maxLag: number,
  report: (waiting: BackfillProgress['waiting']) => void,
): Promise<number> {
  const started = performance.now()
  let waiting = false
  for (;;) {
    const lag = await primaryReplicaLag(scope.client)
    if (lag.lagMs <= maxLag) {
      const waited = waiting ? Math.round(performance.now() - started) : 0
      if (waiting) {
        scope.emit({
          type: 'log',
          tenant: scope.tenant,
          migration: scope.migration,
          message: `backfill resumed: replica lag back under maxReplicaLagMs ${maxLag} after ${waited} ms`,
        })
      }
      return waited
    }
    waiting = true
    const info = { replica: lag.replica, lagMs: Math.round(lag.lagMs), maxReplicaLagMs: maxLag }
    scope.emit({ type: 'backfill-waiting', tenant: scope.tenant, migration: scope.migration, ...info })
    report(info)
    await sleep(LAG_POLL_MS)
  }
}

/** The table (quoted, schema-qualified) and its key column and type. */
async function resolveTarget(client: ClientBase, name: string, key: string | undefined, migration: string) {
  const found = await client.query<{ oid: number | null; q: string | null }>(
    'SELECT to_regclass($1)::oid AS oid, to_regclass($1)::text AS q',
    [name],
  )
  const row = found.rows[0]!
  if (row.oid === null) {
    throw new MigrateError('KEEL_MIGRATION_INVALID', `backfill: table ${name} not found on the search_path`, {
      details: { migration, table: name },
    })
  }
  const columns = await client.query<{ attname: string; type: string }>(
    key === undefined
      ? `SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = $1 AND i.indisprimary`
      : `SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
         WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped`,
    key === undefined ? [row.oid] : [row.oid, key],
  )
  if (columns.rows.length !== 1) {
    throw new MigrateError(
      'KEEL_MIGRATION_INVALID',
      key === undefined
        ? `backfill of ${name}: it has no one-column primary key; pass key (a unique, indexed, orderable column)`
        : `backfill of ${name}: no column ${key}`,
      { details: { migration, table: name } },
    )
  }
  const column = columns.rows[0]!
  return { table: row.q!, key: quote(column.attname), keyType: column.type }
}

/** Rows at or below the start's max key: exact on small tables, pg_class.reltuples on big ones (no long scan). */
async function estimateRows(client: ClientBase, table: string, key: string, keyType: string, upper: string) {
  const estimate = await client.query<{ n: string }>(
    `SELECT greatest(reltuples, 0)::bigint::text AS n FROM pg_class WHERE oid = '${table.replace(/'/g, "''")}'::regclass`,
  )
  const approx = Number(estimate.rows[0]?.n ?? 0)
  if (approx > 1_000_000) return approx
  const exact = await client.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM ${table} WHERE ${key} <= $1::text::${keyType}`,
    [upper],
  )
  return Number(exact.rows[0]!.n)
}
