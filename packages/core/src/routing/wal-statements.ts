import type { Prelude } from '../pool/scoped-query.js'

// A write sent through db.query is wrapped as BEGIN / scope / statement / COMMIT / position, all before
// one Sync: the COMMIT runs (and its commit record is inserted) before the position is read, so the
// position covers the commit, and it costs no extra round trip. The insert position (not the write or
// flush position) is at or past the end of the commit record even with synchronous_commit off.
export const BEGIN: Prelude = { name: 'keel_begin', text: 'BEGIN' }
export const COMMIT: Prelude = { name: 'keel_commit', text: 'COMMIT', ends: true }
export const WAL_POSITION_TEXT = 'SELECT pg_current_wal_insert_lsn()::text AS lsn'
export const WAL_POSITION: Prelude = { name: 'keel_wal_lsn', text: WAL_POSITION_TEXT }

// On a replica, the replay position read in the same batch as the read: what the read could see.
export const REPLAY_POSITION: Prelude = {
  name: 'keel_replay_lsn',
  text: 'SELECT pg_last_wal_replay_lsn()::text',
}
