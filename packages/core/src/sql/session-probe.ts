import type { Prelude } from '../pool/scoped-query.js'

/**
 * Sent after the COMMIT that ends an opaque statement (or a transaction that ran one). Settings are
 * reset rather than inspected: pg_settings hides custom settings (`keel.outbox_relay`, the tenant's
 * `app.tenant_id`) and reading it costs ~0.6 ms, while RESET ALL costs ~0.01 ms and restores each
 * setting to its value at connection start. Unnamed: SQL-level PREPARE only creates named statements,
 * so no tenant SQL can replace it (keel's named ones it can, which the probe sees as from_sql).
 */
export const RESET_SETTINGS: Prelude = { text: 'RESET ALL' }

/**
 * Counts what cannot be reset without also dropping keel's own prepared statements: objects in this
 * backend's temp schema (through pg_depend's index, not a pg_class/pg_proc scan), held cursors (the probe's own portal is listed too, never holdable),
 * SQL-level prepared statements, LISTEN registrations, a role changed with SET ROLE inside a function
 * or DO block. Also reports how many protocol-level prepared statements the backend has (a DO block
 * that ran DEALLOCATE leaves fewer than keel believes it has), and releases session advisory locks
 * (cheaper than reading pg_locks, ~0.4 ms). Fully qualified: it runs under the caller's search_path.
 */
export const SESSION_PROBE: Prelude = {
  text: `SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_depend d
       WHERE d.refclassid = 2615 AND d.refobjid = pg_catalog.pg_my_temp_schema()) = 0
  AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursor() c WHERE c.is_holdable) = 0
  AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statement() p WHERE p.from_sql) = 0
  AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()) = 0
  AND current_user = session_user AS clean,
  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statement() p WHERE NOT p.from_sql) AS protocol,
  pg_catalog.pg_advisory_unlock_all() AS unlocked`,
}

/** The postludes that end an opaque batch after its COMMIT (and WAL position). */
export const SESSION_CHECK: readonly Prelude[] = [RESET_SETTINGS, SESSION_PROBE]

/**
 * Whether the probe's row (as ScopedQuery keeps it: text fields) says the session is clean, given how
 * many named statements the client believes the connection holds.
 */
export function probedClean(row: ReadonlyArray<string | null> | undefined, named: number): boolean {
  return row?.[0] === 't' && row[1] === String(named)
}
