import type { ClientBase } from 'pg'

// One ledger per database, in its own schema so a tenant's search_path never sees it. A scope is
// 'shared', 'schema:<name>' (a tenant schema) or 'database' (a tenant database). Rows are written in the
// migration's own transaction: a migration is in the ledger if and only if it committed.
export const LEDGER_SQL = `
CREATE SCHEMA IF NOT EXISTS keel_migrate;
CREATE TABLE IF NOT EXISTS keel_migrate.ledger (
  scope text NOT NULL,
  id text NOT NULL,
  checksum text NOT NULL,
  duration_ms integer NOT NULL,
  applied_by text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, id)
);
-- Statement-level progress of a migration run outside a transaction (CREATE INDEX CONCURRENTLY):
-- where a killed run resumes.
CREATE TABLE IF NOT EXISTS keel_migrate.progress (
  scope text NOT NULL,
  id text NOT NULL,
  checksum text NOT NULL,
  step integer NOT NULL,
  PRIMARY KEY (scope, id)
);
-- The last failure of a scope, for status; removed when the scope migrates cleanly.
CREATE TABLE IF NOT EXISTS keel_migrate.failure (
  scope text PRIMARY KEY,
  id text,
  error text NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now()
);
-- A backfill's resume state (ADR 0048): the max key when it first started (rows above it are never
-- touched) and the last key of the last batch that committed, written in that batch's transaction.
CREATE TABLE IF NOT EXISTS keel_migrate.backfill (
  scope text NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  checksum text NOT NULL,
  upper_key text,
  last_key text,
  rows_done bigint NOT NULL DEFAULT 0,
  batches integer NOT NULL DEFAULT 0,
  total_estimate bigint NOT NULL DEFAULT 0,
  done boolean NOT NULL DEFAULT false,
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, id, name)
);`

// Two runners creating the ledger at once race in the catalog (CREATE ... IF NOT EXISTS is not atomic):
// a transaction-level advisory lock serializes them. Keys are (classid, objid) int4 pairs: keel_migrate's
// own class id, so no app advisory lock collides with them.
export const LOCK_CLASS = 0x6b6d6967 // 'kmig'

export async function ensureLedger(client: ClientBase): Promise<void> {
  const exists = await client.query<{ ok: boolean }>(
    // The newest table: a ledger created by an older keel gets the tables it lacks.
    "SELECT to_regclass('keel_migrate.backfill') IS NOT NULL AS ok",
  )
  if (exists.rows[0]?.ok === true) return
  await client.query('BEGIN')
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, 0)', [LOCK_CLASS])
    await client.query(LEDGER_SQL)
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined)
    throw error
  }
}

export interface LedgerState {
  applied: Map<string, { checksum: string; appliedAt: Date }>
  progress: Map<string, { checksum: string; step: number }>
  failure: { id: string | null; error: string; failedAt: Date } | undefined
}

/** The scope's applied migrations, progress and last failure, in one round trip. */
export async function readLedger(client: ClientBase, scope: string): Promise<LedgerState> {
  const result = await client.query<{
    applied: Array<{ id: string; checksum: string; applied_at: string }>
    progress: Array<{ id: string; checksum: string; step: number }>
    failure: { id: string | null; error: string; failed_at: string } | null
  }>(
    `SELECT
      (SELECT coalesce(json_agg(json_build_object('id', id, 'checksum', checksum, 'applied_at', applied_at)), '[]')
         FROM keel_migrate.ledger WHERE scope = $1) AS applied,
      (SELECT coalesce(json_agg(json_build_object('id', id, 'checksum', checksum, 'step', step)), '[]')
         FROM keel_migrate.progress WHERE scope = $1) AS progress,
      (SELECT json_build_object('id', id, 'error', error, 'failed_at', failed_at)
         FROM keel_migrate.failure WHERE scope = $1) AS failure`,
    [scope],
  )
  const row = result.rows[0]!
  const f = row.failure
  return {
    applied: new Map(
      row.applied.map((r) => [r.id, { checksum: r.checksum, appliedAt: new Date(r.applied_at) }]),
    ),
    progress: new Map(row.progress.map((r) => [r.id, { checksum: r.checksum, step: r.step }])),
    failure: f === null ? undefined : { id: f.id, error: f.error, failedAt: new Date(f.failed_at) },
  }
}

export const RECORD_SQL =
  'INSERT INTO keel_migrate.ledger (scope, id, checksum, duration_ms, applied_by) VALUES ($1, $2, $3, $4, $5)'
