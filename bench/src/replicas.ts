/**
 * keel replica benchmark: read/write splitting under a 10:1 read:write workload of many tenant users,
 * against the local stack's primary, a streaming replica and a replica that applies WAL 1.5 s late.
 * keel (session consistency, the consistency token carried from request to request) against two
 * routers written here: method routing to a random replica (what Drizzle, Prisma and TypeORM do) and a
 * Rails-style 2 s sticky window; primary-only pg and keel without replicas are the throughput
 * references. Per variant: stale reads (a user not seeing their own write), the share of reads served
 * by replicas (measured with inet_server_port(), not inferred), throughput vs primary-only.
 * Prints tables; writes bench/results/replicas.{json,md} and the README's replicas section.
 *
 *   node bench/dist/replicas.js [all|loopback|proxy]
 *
 * `loopback` runs against the stack's ports (every server shares this machine's cores); `proxy` puts
 * a delay proxy in front of each server, as if each were its own machine a network hop away. `all`
 * (the default) runs both.
 *
 * Environment: BENCH_SECONDS (6), BENCH_ROUNDS (3), BENCH_WARMUP_SECONDS (1.5), BENCH_PROXY_SECONDS (5),
 * BENCH_PROXY_ROUNDS (2), BENCH_PROXY_DELAY_MS (2, each way), BENCH_CONCURRENCY (32),
 * BENCH_POOL_MAX (10, per host), BENCH_USERS (20000), BENCH_VARIANTS (comma list narrowing the run;
 * primary-only is always measured), KEEL_STACK_FILE (.keel/stack.json), BENCH_RESULTS_DIR
 * (bench/results; the README is refreshed only for the default). A benchmark, not a test: it never
 * fails on timings or stale reads, only when it cannot run (exit 1).
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { applyRlsPolicy, createKeel, type Keel } from '@keel/core'
import pg from 'pg'
import { BENCH_APPLICATION_NAME, CpuMeter, type CpuSnapshot } from './lib/cpu.js'
import { envNumber } from './lib/env.js'
import { closedLoop, sleep } from './lib/load.js'
import { type MachineMeta, machineMeta } from './lib/machine.js'
import { type DelayProxy, startDelayProxy } from './lib/proxy.js'
import { fmt, fmtInt, fmtPct, fmtRatio, markdownTable } from './lib/report.js'
import { previousResults, writeResults } from './lib/results.js'
import { runMain } from './lib/run-main.js'
import { readStack, repoRoot, type Stack, type StackReplica, withHostPort } from './lib/stack.js'
import { median, percentile, round, Samples } from './lib/stats.js'

// ---------------------------------------------------------------------------------------------- settings

const settings = {
  seconds: envNumber('BENCH_SECONDS', 6),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 1.5),
  proxySeconds: envNumber('BENCH_PROXY_SECONDS', 5),
  proxyRounds: Math.round(envNumber('BENCH_PROXY_ROUNDS', 2)),
  proxyDelayMs: envNumber('BENCH_PROXY_DELAY_MS', 2),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 32)),
  poolMax: Math.round(envNumber('BENCH_POOL_MAX', 10)),
  users: Math.round(envNumber('BENCH_USERS', 20_000)),
  tenants: 200,
  rowsPerTenant: 50,
  /** Share of requests that write (then read the row back): one write per ten reads. */
  writeShare: 0.1,
  /** Share of a user's reads aimed at a row they wrote recently (when they have one). */
  ownReadShare: 0.5,
  /** How many of a user's most recently written rows those reads pick from. */
  recentRows: 4,
  /** The read-your-writes window: Rails' sticky delay, and the "inside/outside" split of every variant. */
  windowMs: 2_000,
}

const SCENARIOS = ['loopback', 'proxy'] as const
type Scenario = (typeof SCENARIOS)[number]

function parseScenarios(arg: string | undefined): Scenario[] {
  if (arg === undefined || arg === 'all') return [...SCENARIOS]
  if ((SCENARIOS as readonly string[]).includes(arg)) return [arg as Scenario]
  console.error(
    `usage: node bench/dist/replicas.js [all|${SCENARIOS.join('|')}]  (got ${JSON.stringify(arg)})`,
  )
  process.exit(2)
}

const VARIANT_KEYS = ['primary-only', 'keel-primary', 'random-replica', 'rails-sticky', 'keel'] as const
type VariantKey = (typeof VARIANT_KEYS)[number]

/** BENCH_VARIANTS=keel,rails-sticky narrows the run (primary-only is always measured, first). */
function selectVariants(): VariantKey[] {
  const raw = process.env.BENCH_VARIANTS
  if (raw === undefined || raw.trim() === '') return [...VARIANT_KEYS]
  const picked = raw.split(',').map((k) => k.trim())
  const unknown = picked.filter((k) => !(VARIANT_KEYS as readonly string[]).includes(k))
  if (unknown.length > 0)
    throw new Error(`unknown BENCH_VARIANTS ${unknown.join(', ')}; known: ${VARIANT_KEYS.join(', ')}`)
  return VARIANT_KEYS.filter((k) => k === 'primary-only' || picked.includes(k))
}

// ------------------------------------------------------------------------------------------------- data

const TABLE = 'bench_ryw'
const PROBE_TABLE = 'bench_ryw_probe'
// Every statement names the tenant itself: the raw baselines run as the superuser (RLS does not apply
// to them), keel as the runtime role under RLS, with the same WHERE for a like-for-like statement.
// inet_server_port() tells which server answered: the share of replica reads is measured, not inferred.
const READ_SQL = `SELECT version, inet_server_port() AS port FROM ${TABLE} WHERE tenant_id = $1 AND id = $2`
const WRITE_SQL = `UPDATE ${TABLE} SET version = version + 1 WHERE tenant_id = $1 AND id = $2 RETURNING version, inet_server_port() AS port`

const tenantIds = Array.from({ length: settings.tenants }, (_, i) => `t${String(i).padStart(3, '0')}`)
const randomInt = (n: number): number => Math.floor(Math.random() * n)
const pickRow = (): number => 1 + randomInt(settings.rowsPerTenant)

interface Row {
  version: number
  port: number
}

function oneRow(result: { rows: Row[] }): Row {
  const row = result.rows[0]
  if (result.rows.length !== 1 || row === undefined)
    throw new Error(`expected 1 row, got ${result.rows.length}`)
  return row
}

function replicasOf(stack: Stack): StackReplica[] {
  const replicas = stack.replicas ?? []
  if (replicas.length < 2) {
    throw new Error(
      `the stack lists ${replicas.length} replica(s); this bench needs replica1 and replica2 (node scripts/stack.mjs up)`,
    )
  }
  return replicas
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

interface SetupRecord {
  seeded: boolean
  setupS: number
  /** Per replica: median ms from a commit on the primary until the replica shows it (3 probes). */
  visibilityMs: Record<string, number>
  applyDelay: Record<string, string>
}

/** Table, rows, grants, RLS; then waits until both replicas show all of it, timing how long a commit takes to appear. */
async function setup(stack: Stack): Promise<SetupRecord> {
  const started = performance.now()
  const expected = settings.tenants * settings.rowsPerTenant
  let seeded = false
  await withClient(stack.primary.ownerUrl, async (owner) => {
    await owner.query(
      `CREATE TABLE IF NOT EXISTS ${TABLE} (tenant_id text NOT NULL, id int NOT NULL, version int NOT NULL DEFAULT 0, payload text NOT NULL, PRIMARY KEY (tenant_id, id))`,
    )
    await owner.query(`GRANT SELECT, UPDATE ON ${TABLE} TO keel_app`)
    await owner.query(`CREATE TABLE IF NOT EXISTS ${PROBE_TABLE} (id int PRIMARY KEY, v bigint NOT NULL)`)
    await withClient(stack.primary.superUrl, async (superuser) => {
      // Counted as the superuser: with FORCE ROW LEVEL SECURITY the owner sees no rows without a tenant.
      const { rows } = await superuser.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
      seeded = rows[0]?.n !== expected
      if (seeded) {
        await superuser.query(`TRUNCATE ${TABLE}`)
        await superuser.query(
          `INSERT INTO ${TABLE} (tenant_id, id, version, payload)
           SELECT 't' || lpad(t::text, 3, '0'), i, 0, md5(t::text || ':' || i::text)
           FROM generate_series(0, $1::int - 1) AS t, generate_series(1, $2::int) AS i`,
          [settings.tenants, settings.rowsPerTenant],
        )
      }
      await superuser.query(`INSERT INTO ${PROBE_TABLE} (id, v) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`)
    })
    await applyRlsPolicy(owner, { table: TABLE })
    await owner.query(`${seeded ? 'VACUUM ANALYZE' : 'ANALYZE'} ${TABLE}`)
  })

  // Replay is sequential: once a replica shows a probe committed after all of the above, it has all of
  // it. Three probes, timed: replica2's figure is its apply delay as this bench's reads experience it.
  const replicas = replicasOf(stack)
  const visibility = new Map<string, number[]>(replicas.map((r) => [r.name, []]))
  const applyDelay: Record<string, string> = {}
  await withClient(stack.primary.superUrl, async (primary) => {
    const clients = await Promise.all(
      replicas.map(async (r) => {
        const client = new pg.Client({ connectionString: r.superUrl, connectionTimeoutMillis: 5_000 })
        client.on('error', () => undefined)
        try {
          await client.connect()
        } catch (error) {
          throw new Error(`${r.name} (${r.host}:${r.port}) is unreachable: ${(error as Error).message}`)
        }
        applyDelay[r.name] =
          (await client.query<{ d: string }>("SELECT current_setting('recovery_min_apply_delay') AS d"))
            .rows[0]?.d ?? '?'
        return { replica: r, client }
      }),
    )
    try {
      for (let probe = 0; probe < 3; probe++) {
        const { rows } = await primary.query<{ v: string }>(
          `UPDATE ${PROBE_TABLE} SET v = v + 1 WHERE id = 1 RETURNING v::text`,
        )
        const target = BigInt(rows[0]!.v)
        const committed = performance.now()
        await Promise.all(
          clients.map(async ({ replica, client }) => {
            for (;;) {
              const seen = await client
                .query<{ v: string }>(`SELECT v::text FROM ${PROBE_TABLE} WHERE id = 1`)
                .then((r) => BigInt(r.rows[0]?.v ?? '-1'))
                .catch(() => -1n) // the table may not have been replayed yet
              if (seen >= target) break
              if (performance.now() - committed > 60_000)
                throw new Error(`${replica.name} did not replay a commit within 60 s: is it streaming?`)
              await sleep(5)
            }
            visibility.get(replica.name)!.push(performance.now() - committed)
          }),
        )
      }
      for (const { replica, client } of clients) {
        const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
        if (rows[0]?.n !== expected)
          throw new Error(`${replica.name} has ${rows[0]?.n} rows of ${TABLE}, expected ${expected}`)
      }
    } finally {
      await Promise.all(clients.map(({ client }) => client.end().catch(() => undefined)))
    }
  })
  return {
    seeded,
    setupS: (performance.now() - started) / 1_000,
    visibilityMs: Object.fromEntries([...visibility].map(([name, ms]) => [name, round(median(ms), 1)])),
    applyDelay,
  }
}

/** Fails loudly if the setup would make the numbers meaningless (RLS off, wrong routing). */
async function sanityCheck(stack: Stack): Promise<void> {
  const keel = createKeel({
    postgres: { primary: { connectionString: stack.primary.url }, pool: { max: 2 } },
  })
  try {
    const db = keel.tenant('t001')
    const own = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${TABLE}`)
    if (own.rows[0]?.n !== settings.rowsPerTenant) throw new Error(`keel saw ${own.rows[0]?.n} rows for t001`)
    const foreign = await db.query(READ_SQL, ['t002', 1])
    if (foreign.rows.length !== 0) throw new Error('RLS let tenant t001 read a row of t002')
    const row = oneRow(await db.query<Row>(READ_SQL, ['t001', 1]))
    if (row.port !== stack.primary.port)
      throw new Error(`inet_server_port() says ${row.port}, the stack's primary is on ${stack.primary.port}`)
  } finally {
    await keel.close()
  }
}

// ------------------------------------------------------------------------------------------ the workload

/** One person using the app: belongs to one tenant, makes one request at a time. */
interface User {
  tenant: string
  busy: boolean
  /** When this user's last write completed (performance.now()), as the workload sees it. */
  lastWriteAt: number
  /** Per row: the version this user's last write of it produced. A read below it is stale. */
  written: Map<number, number>
  /** Per row: the highest version this user has seen (written or read). */
  seen: Map<number, number>
  recent: number[]
  /** keel: the previous request's db.consistencyToken (what the adapters carry in a header). */
  token: string | undefined
  /** Rails: the session's last-write timestamp, set at the end of a request that wrote. */
  railsLastWriteAt: number
}

function makeUsers(): User[] {
  return Array.from({ length: settings.users }, (_, i) => ({
    tenant: tenantIds[i % tenantIds.length]!,
    busy: false,
    lastWriteAt: Number.NEGATIVE_INFINITY,
    written: new Map(),
    seen: new Map(),
    recent: [],
    token: undefined,
    railsLastWriteAt: Number.NEGATIVE_INFINITY,
  }))
}

/** A request's view of the database, as each variant routes it. */
interface Session {
  write(id: number): Promise<Row>
  read(id: number): Promise<Row>
  /** The request is over (also after a failure): carry whatever state the router carries. */
  end(): void
}

interface Variant {
  key: VariantKey
  label: string
  begin(user: User): Session
  close(): Promise<void>
  /** keel variants: the instance, for health checks. */
  keel?: Keel
}

type HostName = string

interface ReadTally {
  reads: number
  onReplica: number
}

/** Counters of one measured window. */
class Tally {
  requests = 0
  reads = 0
  writes = 0
  readsByHost = new Map<HostName, number>()
  inside: ReadTally = { reads: 0, onReplica: 0 }
  outside: ReadTally = { reads: 0, onReplica: 0 }
  /** Reads of a row this user has written before (the reads that can be stale). */
  ownReads = 0
  stale = 0
  /** Stale reads that were the read-back in the very request that wrote. */
  staleSameRequest = 0
  staleByHost = new Map<HostName, number>()
  /** Reads older than a version this user had already seen (monotonic-read violations; stale included). */
  wentBack = 0
  /** Writes answered by anything but the primary: a bench bug, never expected. */
  misroutedWrites = 0
  readLatency = new Samples()
  writeLatency = new Samples()
}

class Workload {
  readonly #hostByPort: Map<number, HostName>
  readonly #primaryPort: number

  constructor(stack: Stack) {
    this.#primaryPort = stack.primary.port
    this.#hostByPort = new Map([
      [stack.primary.port, 'primary'],
      ...replicasOf(stack).map((r): [number, HostName] => [r.port, r.name]),
    ])
  }

  host(port: number): HostName {
    return this.#hostByPort.get(port) ?? `port ${port}`
  }

  /** One measured (or warm-up) window of `variant`, with fresh users: no token or timestamp carries over. */
  async window(variant: Variant, seconds: number) {
    const users = makeUsers()
    const tally = new Tally()
    const pickUser = (): User => {
      for (;;) {
        const user = users[randomInt(users.length)]!
        if (!user.busy) return user
      }
    }
    const read = async (session: Session, user: User, id: number, sameRequest: boolean): Promise<void> => {
      const startedAt = performance.now()
      const row = await session.read(id)
      tally.readLatency.push(performance.now() - startedAt)
      tally.reads++
      const host = this.host(row.port)
      const onReplica = row.port !== this.#primaryPort
      tally.readsByHost.set(host, (tally.readsByHost.get(host) ?? 0) + 1)
      const window = startedAt - user.lastWriteAt < settings.windowMs ? tally.inside : tally.outside
      window.reads++
      if (onReplica) window.onReplica++
      const mine = user.written.get(id)
      if (mine !== undefined) {
        tally.ownReads++
        if (row.version < mine) {
          tally.stale++
          if (sameRequest) tally.staleSameRequest++
          tally.staleByHost.set(host, (tally.staleByHost.get(host) ?? 0) + 1)
        }
      }
      const seen = user.seen.get(id)
      if (seen !== undefined && row.version < seen) tally.wentBack++
      if (seen === undefined || row.version > seen) user.seen.set(id, row.version)
    }
    const request = async (): Promise<void> => {
      const user = pickUser()
      user.busy = true
      let session: Session | undefined
      try {
        session = variant.begin(user)
        if (Math.random() < settings.writeShare) {
          const id = pickRow()
          const startedAt = performance.now()
          const row = await session.write(id)
          tally.writeLatency.push(performance.now() - startedAt)
          tally.writes++
          if (row.port !== this.#primaryPort) tally.misroutedWrites++
          user.lastWriteAt = performance.now()
          user.written.set(id, row.version)
          user.seen.set(id, Math.max(row.version, user.seen.get(id) ?? 0))
          user.recent = [id, ...user.recent.filter((r) => r !== id)].slice(0, settings.recentRows)
          await read(session, user, id, true) // show the user what they just saved
        } else {
          const own = user.recent.length > 0 && Math.random() < settings.ownReadShare
          await read(session, user, own ? user.recent[randomInt(user.recent.length)]! : pickRow(), false)
        }
        tally.requests++
      } finally {
        session?.end()
        user.busy = false
      }
    }
    const loop = await closedLoop(request, { concurrency: settings.concurrency, seconds })
    return { loop, tally }
  }
}

// --------------------------------------------------------------------------------------------- variants

function rawPool(connectionString: string): pg.Pool {
  // idleTimeoutMillis 0: connections stay open between rounds, so no round pays for reconnecting.
  const pool = new pg.Pool({
    connectionString,
    max: settings.poolMax,
    idleTimeoutMillis: 0,
    connectionTimeoutMillis: 5_000,
    application_name: `${BENCH_APPLICATION_NAME}-pg`,
  })
  pool.on('error', () => undefined) // a replica stopped by another suite: the failing call reports it
  return pool
}

// Plain pool.query(text, values), as the tenancy bench's raw baseline and as Drizzle and TypeORM send
// over node-postgres by default (unnamed statements: parsed and planned on every call). keel keeps its
// statements prepared; the keel-without-replicas row shows what keel costs before any routing.
async function rawRead(pool: pg.Pool, tenant: string, id: number): Promise<Row> {
  return oneRow(await pool.query<Row>(READ_SQL, [tenant, id]))
}

async function rawWrite(pool: pg.Pool, tenant: string, id: number): Promise<Row> {
  return oneRow(await pool.query<Row>(WRITE_SQL, [tenant, id]))
}

interface RawPools {
  primary: pg.Pool
  replicas: pg.Pool[]
}

/** Where the variants connect: the stack's own ports, or a delay proxy in front of each host. */
interface Endpoints {
  primary: { url: string; superUrl: string }
  replicas: Array<{ name: string; url: string; superUrl: string }>
}

function directEndpoints(stack: Stack): Endpoints {
  return {
    primary: { url: stack.primary.url, superUrl: stack.primary.superUrl },
    replicas: replicasOf(stack).map((r) => ({ name: r.name, url: r.url, superUrl: r.superUrl })),
  }
}

function randomOf<T>(items: readonly T[]): T {
  return items[randomInt(items.length)]!
}

function keelFor(endpoints: Endpoints, withReplicas: boolean): Keel {
  return createKeel({
    postgres: {
      primary: { connectionString: endpoints.primary.url },
      replicas: withReplicas
        ? endpoints.replicas.map((r) => ({ name: r.name, connectionString: r.url }))
        : [],
      pool: { max: settings.poolMax, idleTimeoutMs: 0 },
      consistency: 'session',
      applicationName: `${BENCH_APPLICATION_NAME}-keel`,
    },
    tenancy: { mode: 'rls' },
  })
}

function keelVariant(key: VariantKey, label: string, keel: Keel): Variant {
  return {
    key,
    label,
    begin(user) {
      // One tenant client per request, resumed from the previous request's token.
      const db = keel.tenant(user.tenant, { consistencyToken: user.token })
      return {
        write: async (id) => oneRow(await db.query<Row>(WRITE_SQL, [user.tenant, id])),
        read: async (id) => oneRow(await db.query<Row>(READ_SQL, [user.tenant, id])),
        end: () => {
          user.token = db.consistencyToken ?? user.token
        },
      }
    },
    close: () => keel.close(),
    keel,
  }
}

function makeVariant(key: VariantKey, endpoints: Endpoints, pools: RawPools): Variant {
  const noop = () => undefined
  switch (key) {
    case 'primary-only':
      return {
        key,
        label: 'primary only (pg.Pool)',
        begin: (user) => ({
          write: (id) => rawWrite(pools.primary, user.tenant, id),
          read: (id) => rawRead(pools.primary, user.tenant, id),
          end: noop,
        }),
        close: async () => undefined,
      }
    case 'keel-primary':
      return keelVariant(key, 'keel, no replicas configured', keelFor(endpoints, false))
    case 'random-replica':
      // Drizzle withReplicas, Prisma readReplicas, TypeORM replication: the statement's kind decides;
      // reads go to a random replica, with no memory of the user's writes.
      return {
        key,
        label: 'method routing: reads to a random replica',
        begin: (user) => ({
          write: (id) => rawWrite(pools.primary, user.tenant, id),
          read: (id) => rawRead(randomOf(pools.replicas), user.tenant, id),
          end: noop,
        }),
        close: async () => undefined,
      }
    case 'rails-sticky':
      // ActiveRecord's DatabaseSelector with `delay: 2.seconds`: a request that writes uses the primary
      // throughout and stamps the session; a read request within 2 s of that stamp uses the primary too.
      return {
        key,
        label: `Rails-style sticky: primary for ${settings.windowMs / 1_000} s after a write`,
        begin: (user) => {
          let wrote = false
          const sticky = performance.now() - user.railsLastWriteAt < settings.windowMs
          return {
            write: (id) => {
              wrote = true
              return rawWrite(pools.primary, user.tenant, id)
            },
            read: (id) =>
              rawRead(wrote || sticky ? pools.primary : randomOf(pools.replicas), user.tenant, id),
            end: () => {
              if (wrote) user.railsLastWriteAt = performance.now()
            },
          }
        },
        close: async () => undefined,
      }
    case 'keel':
      return keelVariant(
        key,
        'keel: session consistency, token carried across requests',
        keelFor(endpoints, true),
      )
  }
}

/** Waits until keel's monitor has every replica in rotation (it polls every 250 ms). */
async function keelReady(keel: Keel, timeoutMs = 15_000): Promise<string | undefined> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const health = await keel.health()
    const out = health.replicas.filter((r) => !r.inRotation)
    if (out.length === 0) return undefined
    if (performance.now() > deadline)
      return out.map((r) => `${r.name} not in rotation (${r.error ?? `lag ${r.lagMs} ms`})`).join('; ')
    await sleep(100)
  }
}

// --------------------------------------------------------------------------------------------- the watch

interface HostWatchRecord {
  /** Polls that failed (the host was unreachable). */
  failures: number
  /** Times the server was found restarted (its postmaster start time changed). */
  restarts: number
  /** A replica found out of recovery (promoted). */
  notReplica: number
  /** now() - pg_last_xact_replay_timestamp() on a replica while the workload writes: its replay delay. */
  lagMeanMs: number | undefined
  lagMaxMs: number | undefined
  lastError: string | undefined
}

/**
 * Polls every host twice a second during the measured windows: another suite sharing the stack may
 * stop, kill or promote a replica, and a run where that happened says nothing about routing.
 */
class StackWatch {
  readonly #hosts: Array<{ name: string; url: string; replica: boolean; client?: pg.Client | undefined }>
  #stats = new Map<string, { record: HostWatchRecord; lags: number[]; started?: string }>()
  #timer: NodeJS.Timeout | undefined
  #ticking: Promise<void> | undefined

  constructor(stack: Stack) {
    this.#hosts = [
      { name: 'primary', url: stack.primary.superUrl, replica: false },
      ...replicasOf(stack).map((r) => ({ name: r.name, url: r.superUrl, replica: true })),
    ]
    this.reset()
  }

  reset(): void {
    const started = new Map([...this.#stats].map(([name, s]) => [name, s.started]))
    this.#stats = new Map(
      this.#hosts.map((h) => [
        h.name,
        {
          record: {
            failures: 0,
            restarts: 0,
            notReplica: 0,
            lagMeanMs: undefined,
            lagMaxMs: undefined,
            lastError: undefined,
          },
          lags: [],
          started: started.get(h.name),
        },
      ]),
    )
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.#ticking ??= this.#tick().finally(() => {
        this.#ticking = undefined
      })
    }, 500)
  }

  async #tick(): Promise<void> {
    await Promise.all(
      this.#hosts.map(async (host) => {
        const stats = this.#stats.get(host.name)!
        try {
          if (host.client === undefined) {
            const client = new pg.Client({ connectionString: host.url, connectionTimeoutMillis: 2_000 })
            client.on('error', () => undefined)
            host.client = client
            await client.connect()
          }
          const { rows } = await host.client.query<{
            started: string
            recovery: boolean
            lag_ms: number | null
          }>(
            `SELECT pg_postmaster_start_time()::text AS started, pg_is_in_recovery() AS recovery,
               (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8 AS lag_ms`,
          )
          const row = rows[0]!
          if (stats.started !== undefined && stats.started !== row.started) stats.record.restarts++
          stats.started = row.started
          if (host.replica && !row.recovery) stats.record.notReplica++
          if (host.replica && row.lag_ms !== null) stats.lags.push(row.lag_ms)
        } catch (error) {
          stats.record.failures++
          stats.record.lastError = error instanceof Error ? error.message : String(error)
          await host.client?.end().catch(() => undefined)
          host.client = undefined
        }
      }),
    )
  }

  /** What happened since the last reset. */
  snapshot(): Record<string, HostWatchRecord> {
    return Object.fromEntries(
      [...this.#stats].map(([name, s]) => [
        name,
        {
          ...s.record,
          lagMeanMs: s.lags.length === 0 ? undefined : s.lags.reduce((a, b) => a + b, 0) / s.lags.length,
          lagMaxMs: s.lags.length === 0 ? undefined : Math.max(...s.lags),
        },
      ]),
    )
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    await this.#ticking
    await Promise.all(this.#hosts.map((h) => h.client?.end().catch(() => undefined)))
  }
}

/**
 * CPU of one window: this process, the backends serving the bench's connections on every server (each
 * found by application_name on its own server, read from /proc), and the whole machine, whose remainder
 * is WAL sending and replay, the stack watch and anything else running.
 */
class ClusterCpu {
  readonly #meters: CpuMeter[]

  constructor(stack: Stack) {
    this.#meters = [stack.primary, ...replicasOf(stack)].map((h) => new CpuMeter(h.superUrl))
  }

  async start(): Promise<void> {
    // A host down now is retried at each snapshot; its backends then count as unknown.
    await Promise.all(this.#meters.map((m) => m.start().catch(() => undefined)))
  }

  snapshot(): Promise<CpuSnapshot[]> {
    return Promise.all(this.#meters.map((m) => m.snapshot()))
  }

  since(
    before: CpuSnapshot[],
    after: CpuSnapshot[],
  ): { clientS: number; serverS: number | undefined; machineS: number | undefined } {
    const deltas = this.#meters.map((_, i) => CpuMeter.delta(before[i]!, after[i]!))
    const first = deltas[0]!
    const servers = deltas.map((d) => d.serverS)
    return {
      clientS: first.clientS,
      serverS: servers.some((v) => v === undefined)
        ? undefined
        : (servers as number[]).reduce((a, b) => a + b, 0),
      machineS: first.machineBusyS,
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#meters.map((m) => m.close()))
  }
}

function troubleOf(watch: Record<string, HostWatchRecord>): string[] {
  const out: string[] = []
  for (const [name, w] of Object.entries(watch)) {
    if (w.failures > 0) out.push(`${name} unreachable in ${w.failures} poll(s): ${w.lastError}`)
    if (w.restarts > 0) out.push(`${name} restarted`)
    if (w.notReplica > 0) out.push(`${name} not in recovery (promoted?)`)
  }
  return out
}

// -------------------------------------------------------------------------------------------- the rounds

interface RoundRecord {
  round: number
  elapsedS: number
  requests: number
  reads: number
  writes: number
  opsPerS: number
  errors: number
  firstError: string | undefined
  stale: number
  ownReads: number
  replicaShare: number
  /** Per replica: replay delay seen by the watch during the window. */
  replicaLagMs: Record<string, { mean: number | undefined; max: number | undefined }>
  /** CPU seconds of this process, of the bench's backends on all three servers, of the whole machine. */
  clientCpuS: number | undefined
  serverCpuS: number | undefined
  machineCpuS: number | undefined
  /** keel only: what keel.health() said at the end of the window. */
  keelHealth?: Array<{ name: string; inRotation: boolean; lagMs: number | null }>
  trouble: string[]
}

interface VariantRecord {
  key: VariantKey
  label: string
  rounds: RoundRecord[]
  medianOpsPerS: number
  /** median(variant ops/s) / median(primary-only ops/s). */
  ratioToPrimary: number
  /** The same ratio round by round (each round runs every variant back to back). */
  pairedRatio: { median: number; min: number; max: number }
  requests: number
  reads: number
  writes: number
  readsByHost: Record<string, number>
  replicaShare: number
  inside: ReadTally & { share: number }
  outside: ReadTally & { share: number }
  ownReads: number
  stale: number
  staleSameRequest: number
  staleByHost: Record<string, number>
  wentBack: number
  misroutedWrites: number
  readP50Ms: number
  readP99Ms: number
  writeP50Ms: number
  writeP99Ms: number
  /** CPU µs per op (read or write): this process, the bench's Postgres backends, the whole machine. */
  clientCpuUsPerOp: number | undefined
  serverCpuUsPerOp: number | undefined
  machineCpuUsPerOp: number | undefined
  errors: number
  firstError: string | undefined
  notes: string[]
}

function mergeCounts(target: Map<string, number>, source: Map<string, number>): void {
  for (const [k, v] of source) target.set(k, (target.get(k) ?? 0) + v)
}

interface ComparisonRecord {
  date: string
  rounds: number
  seconds: number
  warmupSeconds: number
  /** Through the delay proxies: the delay each way, per chunk. */
  delayMsEachWay?: number
  variants: VariantRecord[]
}

interface Plan {
  endpoints: Endpoints
  rounds: number
  seconds: number
  delayMsEachWay?: number
}

async function runComparison(
  stack: Stack,
  plan: Plan,
  keys: readonly VariantKey[],
  watch: StackWatch,
): Promise<ComparisonRecord> {
  const workload = new Workload(stack)
  const replicas = replicasOf(stack)
  const pools: RawPools = {
    primary: rawPool(plan.endpoints.primary.superUrl),
    replicas: plan.endpoints.replicas.map((r) => rawPool(r.superUrl)),
  }
  const variants = keys.map((key) => makeVariant(key, plan.endpoints, pools))
  const keels = new Map<VariantKey, Keel>()
  const rounds = new Map<VariantKey, RoundRecord[]>(keys.map((k) => [k, []]))
  const totals = new Map<VariantKey, { tally: Tally; errors: number; firstError: string | undefined }>(
    keys.map((k) => [k, { tally: new Tally(), errors: 0, firstError: undefined }]),
  )
  const notes = new Map<VariantKey, string[]>(keys.map((k) => [k, []]))
  const cpu = new ClusterCpu(stack)
  await cpu.start()
  try {
    process.stdout.write(`  warm-up ${settings.warmupSeconds}s each:`)
    for (const variant of variants) {
      if (variant.keel !== undefined && variant.keel.config.postgres.replicas.length > 0)
        keels.set(variant.key, variant.keel)
      await workload.window(variant, settings.warmupSeconds)
      process.stdout.write(` ${variant.key}`)
    }
    process.stdout.write('\n')
    for (const [key, keel] of keels) {
      const problem = await keelReady(keel)
      if (problem !== undefined) notes.get(key)!.push(`before measuring: ${problem}`)
    }
    for (let r = 0; r < plan.rounds; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse()
      const line: string[] = []
      for (const variant of order) {
        watch.reset()
        const cpuBefore = await cpu.snapshot()
        const { loop, tally } = await workload.window(variant, plan.seconds)
        const used = cpu.since(cpuBefore, await cpu.snapshot())
        const watched = watch.snapshot()
        const keel = keels.get(variant.key)
        const health = keel === undefined ? undefined : await keel.health()
        const ops = tally.reads + tally.writes
        const record: RoundRecord = {
          round: r + 1,
          elapsedS: loop.elapsedS,
          requests: tally.requests,
          reads: tally.reads,
          writes: tally.writes,
          opsPerS: ops / loop.elapsedS,
          errors: loop.errors,
          firstError: loop.firstError,
          stale: tally.stale,
          ownReads: tally.ownReads,
          replicaShare: (tally.inside.onReplica + tally.outside.onReplica) / tally.reads,
          clientCpuS: used.clientS,
          serverCpuS: used.serverS,
          machineCpuS: used.machineS,
          replicaLagMs: Object.fromEntries(
            replicas.map((rep) => [
              rep.name,
              { mean: watched[rep.name]?.lagMeanMs, max: watched[rep.name]?.lagMaxMs },
            ]),
          ),
          ...(health === undefined
            ? {}
            : {
                keelHealth: health.replicas.map((h) => ({
                  name: h.name,
                  inRotation: h.inRotation,
                  lagMs: h.lagMs,
                })),
              }),
          trouble: [
            ...troubleOf(watched),
            // keel took a replica out of rotation (it answers from the others): say so, it changes the shares.
            ...(health?.replicas ?? [])
              .filter((h) => !h.inRotation)
              .map(
                (h) => `keel had ${h.name} out of rotation at the end (${h.error ?? `lag ${h.lagMs} ms`})`,
              ),
          ],
        }
        rounds.get(variant.key)!.push(record)
        const total = totals.get(variant.key)!
        mergeTally(total.tally, tally)
        total.errors += loop.errors
        total.firstError ??= loop.firstError
        line.push(
          `${variant.key} ${fmtInt(record.opsPerS)} ops/s, ${record.stale} stale, ${fmtPct(record.replicaShare, 0)} on replicas` +
            `${loop.errors > 0 ? `, ${loop.errors} errors` : ''}${record.trouble.length > 0 ? ' (!)' : ''}`,
        )
      }
      console.log(`  round ${r + 1}/${plan.rounds}:\n    ${line.join('\n    ')}`)
    }
  } finally {
    await cpu.close()
    await Promise.all(variants.map((v) => v.close()))
    await Promise.all([pools.primary, ...pools.replicas].map((p) => p.end()))
  }

  const base = rounds.get('primary-only')!
  const baseMedian = median(base.map((r) => r.opsPerS))
  const records = variants.map((variant): VariantRecord => {
    const list = rounds.get(variant.key)!
    const total = totals.get(variant.key)!
    const t = total.tally
    const paired = list.map((r, i) => r.opsPerS / base[i]!.opsPerS)
    const readSorted = Float64Array.from(t.readLatency.values()).sort()
    const writeSorted = Float64Array.from(t.writeLatency.values()).sort()
    const ops = t.reads + t.writes
    const perOp = (pick: (r: RoundRecord) => number | undefined): number | undefined => {
      let total = 0
      for (const r of list) {
        const v = pick(r)
        if (v === undefined) return undefined
        total += v
      }
      return ops === 0 ? undefined : (total * 1e6) / ops
    }
    const trouble = [...new Set(list.flatMap((r) => r.trouble.map((x) => `round ${r.round}: ${x}`)))]
    return {
      key: variant.key,
      label: variant.label,
      rounds: list,
      medianOpsPerS: median(list.map((r) => r.opsPerS)),
      ratioToPrimary: median(list.map((r) => r.opsPerS)) / baseMedian,
      pairedRatio: { median: median(paired), min: Math.min(...paired), max: Math.max(...paired) },
      requests: t.requests,
      reads: t.reads,
      writes: t.writes,
      readsByHost: Object.fromEntries(t.readsByHost),
      replicaShare: (t.inside.onReplica + t.outside.onReplica) / t.reads,
      inside: { ...t.inside, share: t.inside.onReplica / t.inside.reads },
      outside: { ...t.outside, share: t.outside.onReplica / t.outside.reads },
      ownReads: t.ownReads,
      stale: t.stale,
      staleSameRequest: t.staleSameRequest,
      staleByHost: Object.fromEntries(t.staleByHost),
      wentBack: t.wentBack,
      misroutedWrites: t.misroutedWrites,
      readP50Ms: percentile(readSorted, 50),
      readP99Ms: percentile(readSorted, 99),
      writeP50Ms: percentile(writeSorted, 50),
      writeP99Ms: percentile(writeSorted, 99),
      clientCpuUsPerOp: perOp((r) => r.clientCpuS),
      serverCpuUsPerOp: perOp((r) => r.serverCpuS),
      machineCpuUsPerOp: perOp((r) => r.machineCpuS),
      errors: total.errors,
      firstError: total.firstError,
      notes: [...notes.get(variant.key)!, ...trouble],
    }
  })
  return {
    date: new Date().toISOString(),
    rounds: plan.rounds,
    seconds: plan.seconds,
    warmupSeconds: settings.warmupSeconds,
    ...(plan.delayMsEachWay === undefined ? {} : { delayMsEachWay: plan.delayMsEachWay }),
    variants: records,
  }
}

function mergeTally(target: Tally, source: Tally): void {
  target.requests += source.requests
  target.reads += source.reads
  target.writes += source.writes
  mergeCounts(target.readsByHost, source.readsByHost)
  target.inside.reads += source.inside.reads
  target.inside.onReplica += source.inside.onReplica
  target.outside.reads += source.outside.reads
  target.outside.onReplica += source.outside.onReplica
  target.ownReads += source.ownReads
  target.stale += source.stale
  target.staleSameRequest += source.staleSameRequest
  mergeCounts(target.staleByHost, source.staleByHost)
  target.wentBack += source.wentBack
  target.misroutedWrites += source.misroutedWrites
  for (const v of source.readLatency.values()) target.readLatency.push(v)
  for (const v of source.writeLatency.values()) target.writeLatency.push(v)
}

// -------------------------------------------------------------------------------------------- reporting

interface Meta extends MachineMeta {
  pgClient: string
  keel: string
  postgres: string
  settings: typeof settings
  stack: {
    primary: string
    replicas: Array<{ name: string; address: string; applyDelay: string | undefined; visibilityMs?: number }>
    /** The replica that applies WAL late (the one whose replay delay the detail table shows). */
    lagged: string
  }
}

interface Results {
  meta: Meta
  setup: SetupRecord
  loopback?: ComparisonRecord
  proxy?: ComparisonRecord
}

async function collectMeta(stack: Stack, setupRecord: SetupRecord): Promise<Meta> {
  const postgres = await withClient(stack.primary.superUrl, async (client) => {
    return (await client.query<{ v: string }>('SELECT version() AS v')).rows[0]?.v ?? 'unknown'
  })
  const require = createRequire(import.meta.url)
  const keelPackage = JSON.parse(readFileSync(join(repoRoot, 'packages/core/package.json'), 'utf8')) as {
    version: string
  }
  return {
    ...machineMeta(),
    pgClient: (require('pg/package.json') as { version: string }).version,
    keel: keelPackage.version,
    postgres,
    settings,
    stack: {
      primary: `${stack.primary.host}:${stack.primary.port}`,
      replicas: replicasOf(stack).map((r) => ({
        name: r.name,
        address: `${r.host}:${r.port}`,
        applyDelay: setupRecord.applyDelay[r.name],
        ...(setupRecord.visibilityMs[r.name] === undefined
          ? {}
          : { visibilityMs: setupRecord.visibilityMs[r.name] }),
      })),
      lagged: replicasOf(stack).reduce((a, b) => ((b.applyDelayMs ?? 0) > (a.applyDelayMs ?? 0) ? b : a))
        .name,
    },
  }
}

function ratioCell(v: VariantRecord): string {
  if (v.key === 'primary-only') return '1.00x'
  return `${fmtRatio(v.ratioToPrimary)} (${v.pairedRatio.min.toFixed(2)}–${v.pairedRatio.max.toFixed(2)})`
}

function mainTable(variants: readonly VariantRecord[]): string {
  return markdownTable(
    [
      'variant',
      'ops/s (median)',
      'vs primary-only (range)',
      'reads',
      'stale reads',
      'reads on replicas',
      'outside RYW windows',
      'inside RYW windows',
      'read p50 ms',
      'read p99 ms',
      'errors',
    ],
    variants.map((v) => [
      v.label,
      fmtInt(v.medianOpsPerS),
      ratioCell(v),
      fmtInt(v.reads),
      fmtInt(v.stale),
      fmtPct(v.replicaShare),
      fmtPct(v.outside.share),
      fmtPct(v.inside.share),
      fmt(v.readP50Ms),
      fmt(v.readP99Ms),
      fmtInt(v.errors),
    ]),
    [false, true, true, true, true, true, true, true, true, true, true],
  )
}

function detailTable(variants: readonly VariantRecord[], meta: Meta): string {
  const replicaNames = replicaNamesOf(meta)
  const lagged = meta.stack.lagged
  const hosts = ['primary', ...replicaNames]
  return markdownTable(
    [
      'variant',
      `reads on ${hosts.join(' / ')}`,
      'reads inside windows',
      'reads of own writes',
      'stale: same request / later',
      'stale by host',
      'older than seen',
      'write p50 / p99 ms',
      'CPU µs/op: client / PG / machine',
      `${lagged} replay delay (mean)`,
    ],
    variants.map((v) => {
      const byHost = hosts.map((h) => fmtPct((v.readsByHost[h] ?? 0) / v.reads, 0)).join(' / ')
      const staleHosts = Object.entries(v.staleByHost)
        .map(([h, n]) => `${h} ${fmtInt(n)}`)
        .join(', ')
      const lags = v.rounds
        .map((r) => r.replicaLagMs[lagged]?.mean)
        .filter((x): x is number => x !== undefined)
      return [
        v.label,
        byHost,
        fmtPct(v.inside.reads / v.reads),
        fmtInt(v.ownReads),
        `${fmtInt(v.staleSameRequest)} / ${fmtInt(v.stale - v.staleSameRequest)}`,
        staleHosts === '' ? '–' : staleHosts,
        fmtInt(v.wentBack),
        `${fmt(v.writeP50Ms)} / ${fmt(v.writeP99Ms)}`,
        `${fmtInt(v.clientCpuUsPerOp)} / ${fmtInt(v.serverCpuUsPerOp)} / ${fmtInt(v.machineCpuUsPerOp)}`,
        lags.length === 0 ? 'n/a' : `${fmtInt(median(lags))} ms`,
      ]
    }),
    [false, true, true, true, true, false, true, true, true, true],
  )
}

function findings(record: ComparisonRecord): string[] {
  const out: string[] = []
  const by = (key: VariantKey) => record.variants.find((v) => v.key === key)
  const keel = by('keel')
  if (keel !== undefined) {
    out.push(
      `keel: **${fmtInt(keel.stale)} stale reads** in ${fmtInt(keel.ownReads)} reads of the user's own writes (target 0); ` +
        `**${fmtPct(keel.outside.share)}** of reads on replicas outside the read-your-writes windows (target ≥ 90 %), ` +
        `${fmtPct(keel.inside.share)} inside them; throughput **${fmtRatio(keel.ratioToPrimary)}** of primary-only (target ≥ 1.00x)`,
    )
  }
  const random = by('random-replica')
  if (random !== undefined) {
    out.push(
      `method routing to a random replica: ${fmtInt(random.stale)} stale reads (${fmtPct(random.stale / random.ownReads)} of reads of own writes; ${fmtInt(random.staleSameRequest)} of them the read-back in the request that wrote); ` +
        `${fmtPct(random.replicaShare)} of reads on replicas; ${fmtRatio(random.ratioToPrimary)} of primary-only`,
    )
  }
  const rails = by('rails-sticky')
  if (rails !== undefined) {
    out.push(
      `Rails-style ${settings.windowMs / 1_000} s sticky window: ${fmtInt(rails.stale)} stale reads; ${fmtPct(rails.replicaShare)} of reads on replicas overall, ` +
        `${fmtPct(rails.outside.share)} outside the windows and ${fmtPct(rails.inside.share)} inside; ${fmtRatio(rails.ratioToPrimary)} of primary-only`,
    )
  }
  const keelPrimary = by('keel-primary')
  if (keelPrimary !== undefined) {
    out.push(`keel without replicas: ${fmtRatio(keelPrimary.ratioToPrimary)} of primary-only`)
  }
  return out
}

function when(iso: string): string {
  return `${iso.slice(0, 16).replace('T', ' ')} UTC`
}

function replicaNamesOf(meta: Meta): string[] {
  return meta.stack.replicas.map((r) => r.name)
}

function notesOf(record: ComparisonRecord): string[] {
  return record.variants.flatMap((v) => [
    ...v.notes.map((n) => `${v.key}: ${n}`),
    ...(v.errors > 0 ? [`${v.key}: ${v.errors} failed requests, first: ${v.firstError}`] : []),
    ...(v.misroutedWrites > 0 ? [`${v.key}: ${v.misroutedWrites} writes not answered by the primary`] : []),
  ])
}

function renderComparison(heading: string, intro: string, record: ComparisonRecord, meta: Meta): string {
  const parts = [`### ${heading}`, intro]
  parts.push(
    findings(record)
      .map((line) => `- ${line}`)
      .join('\n'),
  )
  parts.push(mainTable(record.variants))
  parts.push(detailTable(record.variants, meta))
  const notes = notesOf(record)
  if (notes.length > 0) {
    parts.push(
      `_During this run:_\n\n${notes.map((n) => `- ${n}`).join('\n')}\n\n_Rounds with an unreachable or restarted host are not comparable: re-run._`,
    )
  }
  return parts.join('\n\n')
}

function renderMarkdown(results: Results): string {
  const m = results.meta
  const s = m.settings
  const replicaText = m.stack.replicas
    .map(
      (r) =>
        `${r.name} (recovery_min_apply_delay ${r.applyDelay ?? '?'}: a commit showed there after ${fmt(r.visibilityMs, 0)} ms)`,
    )
    .join(' and ')
  const parts: string[] = []
  parts.push(
    `Measured ${m.date.slice(0, 10)} on ${m.cores} cores (${m.cpuModel}), Node ${m.node}, pg ${m.pgClient}, @keel/core ${m.keel}, ${m.postgres.split(' ').slice(0, 2).join(' ')}: ` +
      `the primary, ${replicaText}, all on this machine. ` +
      `${fmtInt(s.users)} users over ${s.tenants} tenants x ${s.rowsPerTenant} rows, ${s.concurrency} requests in flight, pool max ${s.poolMax} per host. ` +
      `Reads:writes 10:1. A read is stale when it returns an older version of a row than the same user's own last write of it. ` +
      `The read-your-writes (RYW) windows are the ${s.windowMs / 1_000} s after each of a user's writes, the same definition for every variant.`,
  )
  const legend =
    "Detail columns: where the reads ran (`inet_server_port()` of each answer), the share of reads inside the windows, reads of a row the user had written (the reads that can be stale), stale reads split by when and where, reads older than a version the user had already seen (session consistency does not promise monotonic reads across replicas), CPU per op of this process, of the backends serving the bench on all three servers, and of the whole machine, and the lagged replica's replay delay while the variant ran (`now() - pg_last_xact_replay_timestamp()`, polled twice a second)."
  if (results.loopback !== undefined) {
    const r = results.loopback
    parts.push(
      renderComparison(
        'On loopback: three servers sharing this machine',
        `${when(r.date)}: ${r.rounds} alternating rounds of ${r.seconds} s per variant after a ${r.warmupSeconds} s warm-up; median ops/s (reads + writes), ratio of medians to primary-only (range of the per-round ratios). ` +
          `Every server runs on the same ${m.cores} cores as the bench, so a replica adds no capacity here: throughput follows CPU per op, and the machine is shared with other work, so absolute numbers swing from round to round. ${legend}`,
        r,
        m,
      ),
    )
  }
  if (results.proxy !== undefined) {
    const r = results.proxy
    parts.push(
      renderComparison(
        `Through a ${r.delayMsEachWay} ms-each-way delay proxy per host`,
        `${when(r.date)}: each server behind its own TCP proxy (a child process) that holds every chunk ${r.delayMsEachWay} ms in each direction, as if the primary and each replica were separate machines a network hop away: round trips, not this machine's CPU, bound a pool of ${s.poolMax}, so a replica's pool adds capacity. ${r.rounds} alternating rounds of ${r.seconds} s after a ${r.warmupSeconds} s warm-up.`,
        r,
        m,
      ),
    )
  }
  return `${parts.join('\n\n')}\n`
}

function printComparison(heading: string, record: ComparisonRecord, meta: Meta): void {
  console.log(`\n## ${heading}\n\n${mainTable(record.variants)}\n\n${detailTable(record.variants, meta)}`)
  for (const note of notesOf(record)) console.log(`  ! ${note}`)
  console.log(
    `\n${findings(record)
      .map((line) => `- ${line.replaceAll('**', '')}`)
      .join('\n')}`,
  )
  const keel = record.variants.find((v) => v.key === 'keel')
  if (keel !== undefined && keel.stale > 0) {
    console.log(
      `\n! keel served ${keel.stale} stale reads (${keel.staleSameRequest} of them the read-back in the request that wrote): its read-your-writes guarantee failed; details in replicas.json`,
    )
  }
}

// ------------------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const scenarios = parseScenarios(process.argv[2])
  const started = performance.now()
  const stack = readStack()
  const keys = selectVariants()
  const setupRecord = await setup(stack)
  await sanityCheck(stack)
  const meta = await collectMeta(stack, setupRecord)
  console.log(
    `keel replica bench: ${meta.cores} cores, Node ${meta.node}, pg ${meta.pgClient}, ${meta.postgres.split(',')[0]}\n` +
      `primary ${meta.stack.primary}; ${meta.stack.replicas.map((r) => `${r.name} ${r.address} (apply delay ${r.applyDelay}, commit visible after ${fmt(r.visibilityMs, 0)} ms)`).join(', ')}\n` +
      `${settings.users} users over ${settings.tenants} tenants x ${settings.rowsPerTenant} rows (${setupRecord.seeded ? 'seeded' : 'already seeded'}, setup ${setupRecord.setupS.toFixed(1)} s), ` +
      `${settings.concurrency} requests in flight, pool max ${settings.poolMax} per host; variants: ${keys.join(', ')}; scenarios: ${scenarios.join(', ')}`,
  )
  const results: Results = { ...previousResults<Results>('replicas'), meta, setup: setupRecord }
  const watch = new StackWatch(stack)
  watch.start()
  try {
    if (scenarios.includes('loopback')) {
      console.log(`\nOn loopback: ${settings.rounds} rounds x ${settings.seconds} s`)
      results.loopback = await runComparison(
        stack,
        { endpoints: directEndpoints(stack), rounds: settings.rounds, seconds: settings.seconds },
        keys,
        watch,
      )
    }
    if (scenarios.includes('proxy')) {
      console.log(
        `\nThrough a ${settings.proxyDelayMs} ms-each-way delay proxy per host: ${settings.proxyRounds} rounds x ${settings.proxySeconds} s`,
      )
      results.proxy = await withProxies(stack, settings.proxyDelayMs, (endpoints) =>
        runComparison(
          stack,
          {
            endpoints,
            rounds: settings.proxyRounds,
            seconds: settings.proxySeconds,
            delayMsEachWay: settings.proxyDelayMs,
          },
          keys,
          watch,
        ),
      )
    }
  } finally {
    await watch.stop()
  }

  if (scenarios.includes('loopback') && results.loopback !== undefined) {
    printComparison(`On loopback (${settings.users} users, reads:writes 10:1)`, results.loopback, meta)
  }
  if (scenarios.includes('proxy') && results.proxy !== undefined) {
    printComparison(
      `Through a ${settings.proxyDelayMs} ms-each-way delay proxy per host`,
      results.proxy,
      meta,
    )
  }
  const written = writeResults('replicas', 'keel replica benchmark', results, renderMarkdown(results))
  console.log(`\nwrote ${written.join(', ')}; total ${((performance.now() - started) / 1_000).toFixed(0)} s`)
  // The bench itself is broken when the reference could not run at all, or writes went elsewhere.
  for (const scenario of scenarios) {
    const record = results[scenario]
    const reference = record?.variants.find((v) => v.key === 'primary-only')
    if (reference === undefined || reference.reads === 0) {
      console.error(`${scenario}: primary-only completed no reads: the bench could not run`)
      return 1
    }
    if (record!.variants.some((v) => v.misroutedWrites > 0)) return 1
  }
  return 0
}

/** Starts a delay proxy in front of every host, runs `fn` against them, stops them. */
async function withProxies<T>(
  stack: Stack,
  delayMs: number,
  fn: (endpoints: Endpoints) => Promise<T>,
): Promise<T> {
  const hosts = [stack.primary, ...replicasOf(stack)]
  const proxies: DelayProxy[] = []
  try {
    for (const host of hosts) proxies.push(await startDelayProxy(host.host, host.port, delayMs))
    const through = (url: string, i: number) => withHostPort(url, '127.0.0.1', proxies[i]!.port)
    return await fn({
      primary: { url: through(stack.primary.url, 0), superUrl: through(stack.primary.superUrl, 0) },
      replicas: replicasOf(stack).map((r, i) => ({
        name: r.name,
        url: through(r.url, i + 1),
        superUrl: through(r.superUrl, i + 1),
      })),
    })
  } finally {
    await Promise.all(proxies.map((p) => p.stop()))
  }
}

runMain(main)
