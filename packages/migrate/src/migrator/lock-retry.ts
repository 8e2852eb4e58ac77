import type { Client } from 'pg'
import type { Blocker } from '../config/migrator-options.js'
import { MigrateError } from '../errors.js'

export interface LockRetryOptions {
  lockTimeoutMs: number
  maxLockWaitMs: number
  /** Called before each retry with what pg_blocking_pids showed while the statement waited. */
  onRetry(attempt: number, delayMs: number, blockers: Blocker[]): void
}

const BLOCKERS_SQL = `SELECT pid, usename AS "user", application_name AS application, state,
  (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::bigint AS age, left(query, 500) AS query
  FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1))`

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Who blocks a waiting statement can only be asked while it waits: once lock_timeout fires, the wait (and
 * pg_blocking_pids' answer) is gone. So a statement that runs longer than part of lock_timeout gets probed
 * from a second connection, opened only the first time a statement waits that long.
 */
export class BlockerProbe {
  #monitor: Promise<Client> | undefined
  #last: Blocker[] = []
  readonly #connect: () => Promise<Client>
  readonly #pid: number

  constructor(connect: () => Promise<Client>, pid: number) {
    this.#connect = connect
    this.#pid = pid
  }

  /** The blockers seen by the last probe that found any (cleared when taken). */
  take(): Blocker[] {
    const last = this.#last
    this.#last = []
    return last
  }

  async watch<T>(lockTimeoutMs: number, run: () => Promise<T>): Promise<T> {
    let probe: Promise<void> | undefined
    const timer = setTimeout(
      () => {
        probe = this.#probe()
      },
      Math.max(20, Math.floor(lockTimeoutMs * 0.6)),
    )
    try {
      return await run()
    } finally {
      clearTimeout(timer)
      if (probe !== undefined) await probe
    }
  }

  async #probe(): Promise<void> {
    try {
      this.#monitor ??= this.#connect()
      const monitor = await this.#monitor
      const rows = await monitor.query<{
        pid: number
        user: string | null
        application: string | null
        state: string | null
        age: string | null
        query: string | null
      }>(BLOCKERS_SQL, [this.#pid])
      if (rows.rows.length > 0) {
        this.#last = rows.rows.map((r) => ({
          pid: r.pid,
          user: r.user,
          application: r.application,
          state: r.state,
          transactionAgeMs: r.age === null ? null : Number(r.age),
          query: r.query,
        }))
      }
    } catch {
      // Diagnostics only: a failed probe must not fail the migration.
    }
  }

  async close(): Promise<void> {
    const monitor = this.#monitor
    this.#monitor = undefined
    if (monitor !== undefined) await monitor.then((m) => m.end()).catch(() => undefined)
  }
}

/**
 * Runs `attempt` (one whole transaction, or one non-transactional statement) and retries it when Postgres
 * cancels it on lock_timeout (55P03), with exponential backoff and equal jitter, until maxLockWaitMs of
 * waiting in total. Each wait is at most lock_timeout, so the app's queries queue behind the DDL's lock
 * request for at most that long; between attempts they run freely.
 */
export async function withLockRetry<T>(
  what: string,
  options: LockRetryOptions,
  probe: BlockerProbe,
  attempt: () => Promise<T>,
): Promise<T> {
  const started = Date.now()
  for (let n = 1; ; n++) {
    try {
      return await attempt()
    } catch (error) {
      if ((error as { code?: string }).code !== '55P03') throw error
      const blockers = probe.take()
      const elapsed = Date.now() - started
      if (elapsed >= options.maxLockWaitMs) {
        const who = blockers.map(
          (b) => `pid ${b.pid} (${b.state ?? '?'}, ${b.transactionAgeMs ?? '?'} ms): ${b.query ?? ''}`,
        )
        throw new MigrateError(
          'KEEL_MIGRATION_LOCK_TIMEOUT',
          `${what}: gave up after ${n} attempts and ${elapsed} ms waiting for a lock (lock_timeout ${options.lockTimeoutMs} ms)${who.length > 0 ? `; blocked by ${who.join('; ')}` : ''}`,
          { cause: error, details: { attempts: n, waitedMs: elapsed, blockers } },
        )
      }
      const cap = Math.min(options.lockTimeoutMs * 2 ** n, 5_000)
      const delay = Math.min(Math.round(cap / 2 + (Math.random() * cap) / 2), options.maxLockWaitMs - elapsed)
      options.onRetry(n, delay, blockers)
      await sleep(delay)
    }
  }
}
