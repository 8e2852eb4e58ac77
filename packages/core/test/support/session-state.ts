import type { TenantClient } from '../../src/index.js'

/** Session state as `db`'s next statement sees it (on a pool of one: the connection the last call used). */
export async function sessionState(db: TenantClient) {
  const r = await db.query<Record<string, unknown>>(
    `SELECT current_setting('app.tenant_id', true) AS tenant,
       (SELECT coalesce(string_agg(name, ','), '') FROM pg_catalog.pg_settings WHERE source = 'session') AS settings,
       coalesce(current_setting('keel.outbox_relay', true), '') AS relay,
       coalesce(current_setting('app.leak', true), '') AS leak,
       (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema())::int AS temp,
       (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable)::int AS cursors,
       (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)::int AS prepared,
       (SELECT count(*) FROM pg_catalog.pg_listening_channels())::int AS listening,
       (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid())::int AS locks,
       current_user = session_user AS own_role`,
    [],
    // Without a timeout the scope sets only the (hidden) tenant setting: any 'session' source is a leak.
    { statementTimeoutMs: 0 },
  )
  return r.rows[0]
}

export const CLEAN = {
  tenant: 'globex' as string,
  settings: '',
  relay: '',
  leak: '',
  temp: 0,
  cursors: 0,
  prepared: 0,
  listening: 0,
  locks: 0,
  own_role: true,
}
