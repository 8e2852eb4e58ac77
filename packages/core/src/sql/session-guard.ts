import type { Lease } from '../pool/lease.js'
import { connectionOf } from '../pool/pg-internals.js'
import type { Prelude, ScopedQuery } from '../pool/scoped-query.js'
import { BEGIN, COMMIT } from '../routing/wal-statements.js'
import { probedClean, SESSION_CHECK } from './session-probe.js'
import type { SessionEffect } from './statement-class.js'

/**
 * The batch around a statement of each class: a plain one gets nothing; an opaque one runs between
 * BEGIN and COMMIT (so that after COMMIT only session state is left to see), then the settings reset
 * and the probe. `position` (the WAL position, on the primary) goes right after COMMIT.
 */
export function sessionBatch(
  effect: SessionEffect,
  scope: Prelude,
  position: readonly Prelude[],
): { preludes: Prelude[]; postludes: Prelude[] } {
  if (effect !== 'opaque') {
    return position.length === 0
      ? { preludes: [scope], postludes: [] }
      : { preludes: [BEGIN, scope], postludes: [COMMIT, ...position] }
  }
  return { preludes: [BEGIN, scope], postludes: [COMMIT, ...position, ...SESSION_CHECK] }
}

/**
 * After a statement that is not plain, decides whether its connection may go back to the pool: an
 * opaque statement's only if it succeeded and the probe found the session clean; a retire-class
 * statement's never. A failed opaque statement's effects that survive a rollback (PREPARE, a session
 * advisory lock) were not probed, so that connection is destroyed too.
 */
export function settleSession(
  lease: Lease | undefined,
  effect: SessionEffect,
  query: ScopedQuery | undefined,
  succeeded: boolean,
): void {
  if (effect === 'plain' || lease === undefined) return
  if (effect === 'opaque' && succeeded && probedClean(query?.postludeRows.at(-1), namedStatements(lease)))
    return
  lease.markBroken()
}

/** How many named statements pg believes this connection holds (keel's scope, BEGIN, cached ones). */
export function namedStatements(lease: Lease): number {
  const connection = connectionOf(lease.client)
  return Object.keys(connection.parsedStatements).length
}
