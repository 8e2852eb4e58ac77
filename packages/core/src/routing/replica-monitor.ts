// One file (~370 lines) on purpose: the primary's probe and the replicas' probes are one poll, whose
// results only mean something together (lag is a replica's replay against the primary's position, a
// replica is on the primary's timeline or not, the primary down keeps replicas measured against its last
// position). Split, each half would need the other's state.
import pg from 'pg'
import type { Logger } from '../config/config-schema.js'
import { type HostConfig, type HostInfo, hostInfo } from '../pool/host-info.js'
import type { HostPool } from '../pool/host-pool.js'
import type { ClusterIdentity } from './consistency-token.js'
import { type Lsn, parseLsn } from './lsn.js'

export interface ReplicaState {
  /** The first pool attached on this server: health output and logs name the replica by it. */
  readonly host: HostPool
  /**
   * Every pool on this replica server (one per database in `database` mode): the server's replay
   * position is theirs, and a server found down gives up on the statements of all of them.
   */
  readonly pools: Set<HostPool>
  /** The last poll succeeded, the server is in recovery and belongs to the primary's cluster. */
  up: boolean
  /** Up and no further behind than maxReplicaLagMs: reads may go here. */
  inRotation: boolean
  /** The WAL position replayed, i.e. visible to queries (never the received one). */
  replayLsn: Lsn | undefined
  lagMs: number | undefined
  lastError: string | undefined
  lastPollAt: number
  /**
   * The timeline the replica follows (its WAL receiver's, else its last restartpoint's): one still on
   * the timeline the primary left at a failover holds a history the new primary does not share.
   */
  timeline: number | undefined
  /** Whether rotation was ever decided (the first decision is not a change to report as restored). */
  decided: boolean
}

export interface MonitorOptions {
  readonly pollMs: number
  readonly maxLagMs: number
  readonly connectionTimeoutMs: number
  readonly applicationName: string
  readonly logger: Logger | undefined
  readonly onEjected: (state: ReplicaState, reason: string) => void
  readonly onRestored: (state: ReplicaState) => void
  /** The primary stopped answering its probe: calls that need it fail at once from now on. */
  readonly onPrimaryDown?: (primary: HostInfo, reason: string) => void
  /** A probe of the primary answered again; `timelineChanged` when it is a promoted server. */
  readonly onPrimaryRestored?: (
    primary: HostInfo,
    downForMs: number,
    cluster: ClusterIdentity,
    timelineChanged: boolean,
  ) => void
}

/** The primary as its probe last found it: down since `since` (epoch ms), for `reason`. */
export interface PrimaryDown {
  readonly since: number
  readonly reason: string
}

const PRIMARY_POLL = `SELECT pg_current_wal_insert_lsn()::text AS lsn,
  ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
  (SELECT system_identifier FROM pg_control_system())::text AS system_id`

const REPLICA_POLL = `SELECT pg_is_in_recovery() AS recovery,
  pg_last_wal_replay_lsn()::text AS replay,
  (SELECT system_identifier FROM pg_control_system())::text AS system_id,
  COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (pg_control_checkpoint()).timeline_id) AS timeline,
  (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8 AS ts_lag_ms`

// WAL the primary has inserted but a replica cannot have replayed yet without being behind: page
// headers and a record in flight. Less than this counts as caught up.
const LSN_SLACK = 8_192n
const HISTORY_MS = 120_000

interface Sample {
  at: number
  lsn: Lsn
}

/**
 * Polls, on their own small pools, the primary's WAL position and identity and each replica's replay
 * position. Lag is measured against the primary's own WAL history (how long ago the primary passed the
 * replica's replay position), so it needs no clock agreement and reads 0 on an idle cluster; when the
 * primary cannot be polled it falls back to the age of the last replayed commit.
 */
export class ReplicaMonitor {
  readonly replicas: ReplicaState[]
  cluster: ClusterIdentity | undefined
  primaryLsn: Lsn | undefined
  /**
   * Set while the primary's probe fails (refused, reset, or no answer within the probe's timeout);
   * cleared by the first probe that answers. The cluster's primary pools refuse calls at once meanwhile.
   */
  primaryDown: PrimaryDown | undefined
  /** The primary's pools (one per database on it): told when it goes down, so waiters fail at once. */
  readonly primaries = new Set<HostPool>()
  readonly #primaryProbe: pg.Pool
  readonly #primaryInfo: HostInfo
  readonly #probes: Map<ReplicaState, pg.Pool>
  readonly #history: Sample[] = []
  readonly #options: MonitorOptions
  #timer: NodeJS.Timeout | undefined
  #polling: Promise<void> | undefined
  #primaryRefresh: Promise<void> | undefined
  #closed = false

  constructor(
    primary: { config: HostConfig },
    replicas: ReadonlyArray<{ host: HostPool; config: HostConfig }>,
    options: MonitorOptions,
  ) {
    this.#options = options
    this.#primaryProbe = this.#probePool(primary.config)
    this.#primaryInfo = hostInfo(primary.config, 'primary', 'primary')
    this.replicas = replicas.map(({ host }) => ({
      host,
      pools: new Set([host]),
      up: false,
      inRotation: false,
      replayLsn: undefined,
      lagMs: undefined,
      lastError: 'not polled yet',
      lastPollAt: 0,
      timeline: undefined,
      decided: false,
    }))
    this.#probes = new Map(this.replicas.map((state, i) => [state, this.#probePool(replicas[i]!.config)]))
  }

  #probePool(config: HostConfig): pg.Pool {
    const timeout = Math.max(1_000, this.#options.pollMs * 4)
    const pool = new pg.Pool({
      ...config,
      max: 1,
      idleTimeoutMillis: 0,
      connectionTimeoutMillis: Math.min(timeout, this.#options.connectionTimeoutMs || timeout),
      query_timeout: timeout,
      keepAlive: true,
      application_name: `${this.#options.applicationName}:monitor`,
      allowExitOnIdle: true,
    })
    pool.on('error', () => undefined)
    return pool
  }

  /** Polls at once (so the first reads find a picture), then every pollMs. */
  start(): Promise<void> {
    const first = this.poll()
    this.#timer = setInterval(() => {
      // Never overlap polls: a slow host must not pile up probes.
      if (this.#polling === undefined) void this.poll()
    }, this.#options.pollMs)
    this.#timer.unref()
    return first
  }

  poll(): Promise<void> {
    this.#polling ??= (async () => {
      try {
        // Until the primary's position is known, lag falls back to the age of the last replayed commit,
        // which on an idle cluster reads hours: the first poll asks the primary first, so a healthy
        // replica is not reported ejected at start-up.
        const primaryFirst = this.#history.length === 0
        if (primaryFirst) await this.#pollPrimary()
        await Promise.all([
          ...(primaryFirst ? [] : [this.#pollPrimary()]),
          ...this.replicas.map((r) => this.#pollReplica(r)),
        ])
      } finally {
        this.#polling = undefined
      }
    })()
    return this.#polling
  }

  async #pollPrimary(): Promise<void> {
    const ask = () =>
      this.#primaryProbe.query<{ lsn: string; timeline: number; system_id: string }>(PRIMARY_POLL)
    try {
      let r: Awaited<ReturnType<typeof ask>>
      try {
        r = await ask()
      } catch (first) {
        // The probe's connection can be cut while the primary is fine (its backend terminated, a pooler
        // recycling a server connection): one more try, on a new connection, before calling it down.
        // Not after a timeout: a host that stopped answering would take twice as long to be found.
        if (this.#closed || isTimeout(first)) throw first
        r = await ask()
      }
      const row = r.rows[0]
      const lsn = parseLsn(row?.lsn)
      if (row === undefined || lsn === undefined) return
      const before = this.cluster
      const changed = before !== undefined && before.timeline !== row.timeline
      if (before?.systemId !== row.system_id || before.timeline !== row.timeline) {
        this.cluster = { systemId: row.system_id, timeline: row.timeline }
        // A new timeline is a promoted server: the old one's WAL positions mean nothing on it.
        if (before !== undefined) this.#history.length = 0
      }
      const down = this.primaryDown
      if (down !== undefined) {
        this.primaryDown = undefined
        for (const pool of this.primaries) pool.down = undefined
        this.#options.onPrimaryRestored?.(this.#primaryInfo, Date.now() - down.since, this.cluster!, changed)
      }
      this.primaryLsn = lsn
      const now = Date.now()
      const last = this.#history.at(-1)
      if (last === undefined || last.lsn !== lsn) this.#history.push({ at: now, lsn })
      while (this.#history.length > 1 && this.#history[0]!.at < now - HISTORY_MS) this.#history.shift()
    } catch (error) {
      this.primaryLsn = undefined
      if (this.#closed || this.primaryDown !== undefined) return
      const reason = error instanceof Error ? error.message : String(error)
      this.#markPrimaryDown(reason)
    }
  }

  /**
   * The primary did not answer its probe: calls that need it fail at once (KEEL_DB_UNAVAILABLE, reason
   * primary_down) until a probe answers, and calls already queued for one of its connections fail now
   * rather than wait out connectionTimeoutMs. Statements running there are left to their own deadline:
   * a primary slow to answer at peak must not have its writes cut short by a probe.
   */
  #markPrimaryDown(reason: string): void {
    const down = { since: Date.now(), reason }
    this.primaryDown = down
    for (const pool of this.primaries) pool.markDown(down)
    this.#options.onPrimaryDown?.(this.#primaryInfo, reason)
  }

  async #pollReplica(state: ReplicaState): Promise<void> {
    const probe = this.#probes.get(state)!
    try {
      const r = await probe.query<{
        recovery: boolean
        replay: string | null
        system_id: string
        timeline: number | null
        ts_lag_ms: number | null
      }>(REPLICA_POLL)
      const row = r.rows[0]
      if (this.#closed || row === undefined) return
      state.lastPollAt = Date.now()
      if (!row.recovery) return this.#setDown(state, 'not in recovery (promoted, or not a replica)')
      if (this.cluster !== undefined && row.system_id !== this.cluster.systemId) {
        return this.#setDown(state, 'replicates another cluster (system identifier differs)')
      }
      const replay = parseLsn(row.replay)
      state.replayLsn = replay
      if (row.timeline !== null) state.timeline = row.timeline
      const timeline = this.cluster?.timeline
      if (timeline !== undefined && state.timeline !== undefined && state.timeline !== timeline) {
        // After a failover: its replay positions are on another history, so no token can be checked
        // against them, and what it serves may include writes the promoted primary never had.
        return this.#setDown(
          state,
          `follows timeline ${state.timeline}, the primary is on timeline ${timeline}`,
        )
      }
      state.lagMs = this.#lagOf(replay, row.ts_lag_ms)
      state.up = true
      state.lastError = undefined
      this.#setRotation(
        state,
        state.lagMs <= this.#options.maxLagMs,
        `replay lag ${Math.round(state.lagMs)} ms exceeds maxReplicaLagMs ${this.#options.maxLagMs}`,
      )
    } catch (error) {
      if (this.#closed) return
      const reason = error instanceof Error ? error.message : String(error)
      this.#setDown(state, reason)
      // The host did not answer its probe: reads already running there would wait on it for as long
      // as it stays silent, so they are given up on and move to another host.
      for (const pool of state.pools) pool.abandonInFlight(reason)
    }
  }

  #lagOf(replay: Lsn | undefined, timestampLagMs: number | null): number {
    if (replay === undefined) return Number.POSITIVE_INFINITY
    // While the primary is down nothing new is written: a replica falls no further behind than it was
    // then, measured against the primary's last known position and the time it went down (commit
    // timestamps would age every replica out of rotation and leave reads nowhere to go).
    const down = this.primaryDown
    const primaryLsn = down === undefined ? this.primaryLsn : this.#history.at(-1)?.lsn
    if (primaryLsn === undefined || this.#history.length === 0) return Math.max(0, timestampLagMs ?? 0)
    if (primaryLsn <= replay + LSN_SLACK) return 0
    // The first time the primary was seen past the replica's position: how long it has been behind.
    const passed = this.#history.find((s) => s.lsn > replay + LSN_SLACK)
    return passed === undefined ? 0 : (down?.since ?? Date.now()) - passed.at
  }

  /** A write through this process ended at `lsn`: the primary is at least there (newer than the poll). */
  observePrimary(lsn: Lsn): void {
    if (this.primaryLsn === undefined || lsn > this.primaryLsn) this.primaryLsn = lsn
  }

  /**
   * The primary's WAL position read by a poll that started after this call (undefined when the
   * primary cannot be polled). A poll already under way may have read the position before the
   * caller's token was written elsewhere, so it is waited out, not reused; callers arriving together
   * share the next one.
   */
  async freshPrimaryLsn(): Promise<Lsn | undefined> {
    const under = this.#primaryRefresh
    if (under !== undefined) await under
    this.#primaryRefresh ??= this.#pollPrimary().finally(() => {
      this.#primaryRefresh = undefined
    })
    await this.#primaryRefresh
    return this.primaryLsn
  }

  /**
   * Another database's pools on the same servers (`database` mode): the replica at index i of `hosts`
   * is this monitor's replica i. One monitor per server topology, however many databases it holds.
   */
  attach(hosts: readonly HostPool[]): void {
    hosts.forEach((host, i) => {
      this.replicas[i]?.pools.add(host)
    })
  }

  /** The replica server a pool of any attached database is on. */
  stateOf(host: HostPool): ReplicaState | undefined {
    return this.replicas.find((r) => r.pools.has(host))
  }

  /** A read on this replica failed at the host level: out of rotation until a poll says otherwise. */
  markDown(host: HostPool, error: unknown): void {
    const state = this.stateOf(host)
    if (state?.up) {
      this.#setDown(state, error instanceof Error ? error.message : String(error))
    }
  }

  /** A same-round-trip check saw this replay position: newer information than the last poll. */
  observeReplay(host: HostPool, replay: Lsn): void {
    const state = this.stateOf(host)
    if (state !== undefined) state.replayLsn = replay
  }

  #setDown(state: ReplicaState, reason: string): void {
    state.up = false
    state.lastError = reason
    this.#setRotation(state, false, reason)
  }

  #setRotation(state: ReplicaState, inRotation: boolean, reason: string): void {
    const first = !state.decided
    state.decided = true
    if (first) {
      // A replica found healthy at start-up was never ejected; one found unusable is reported.
      state.inRotation = inRotation
      if (!inRotation) this.#options.onEjected(state, reason)
      return
    }
    if (state.inRotation === inRotation) return
    state.inRotation = inRotation
    if (inRotation) this.#options.onRestored(state)
    else this.#options.onEjected(state, reason)
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    await this.#polling?.catch(() => undefined)
    await Promise.all([this.#primaryProbe.end(), ...[...this.#probes.values()].map((p) => p.end())])
  }
}

/** pg's connect and query timeouts (connectionTimeoutMillis, query_timeout). */
function isTimeout(error: unknown): boolean {
  return error instanceof Error && /timeout/i.test(error.message)
}
