import type { ClientBase } from 'pg'
import { MigrateError } from '../errors.js'

/** The replica furthest behind, as the primary sees it. */
export interface ReplicaLag {
  /** The worst replay lag in ms (0 with no replica streaming). */
  lagMs: number
  /** application_name (or address) of that replica; null with none. */
  replica: string | null
  /** Replicas streaming from this server. */
  replicas: number
}

// The walsender's replay_lag: how long ago the primary flushed the WAL the standby has now replayed,
// measured from the standby's own feedback. It keeps growing while a standby receives WAL but does not
// replay it (replay paused, a recovery conflict, a slow apply), because each feedback message reports the
// oldest unreplayed sample's age; it is NULL once a standby has caught up. `state` is NULL when the role
// may not see the row's details (it needs pg_read_all_stats or pg_monitor), which is not "no lag".
const LAG_SQL = `SELECT coalesce(application_name, client_addr::text, pid::text) AS name, state,
  coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float8 AS lag_ms
  FROM pg_stat_replication`

/**
 * Replica replay lag seen from the primary (pg_stat_replication). A session that cannot see the details
 * is refused: a backfill that cannot see lag would run blind and push the app's reads off lagging
 * replicas, which is what maxReplicaLagMs exists to prevent.
 */
export async function primaryReplicaLag(client: ClientBase): Promise<ReplicaLag> {
  const r = await client.query<{ name: string; state: string | null; lag_ms: number }>(LAG_SQL)
  let worst: ReplicaLag = { lagMs: 0, replica: null, replicas: r.rows.length }
  for (const row of r.rows) {
    if (row.state === null) {
      throw new MigrateError(
        'KEEL_MIGRATE_CONFIG_INVALID',
        'the migration role cannot read pg_stat_replication, so a backfill cannot see replica lag: GRANT pg_monitor (or pg_read_all_stats) to it, or pass maxReplicaLagMs: 0 to backfill without lag throttling',
        { details: { replica: row.name } },
      )
    }
    if (row.lag_ms > worst.lagMs) worst = { lagMs: row.lag_ms, replica: row.name, replicas: r.rows.length }
  }
  return worst
}
