// Types for scripts/stack/client.mjs (the local service stack helper).

export type StackComponent = 'primary' | 'replica1' | 'replica2' | 'redis' | 'pgbouncer'
export type StackReplicaName = 'replica1' | 'replica2'
export type StackCommand =
  | 'up'
  | 'down'
  | 'status'
  | 'env'
  | 'start'
  | 'stop'
  | 'kill'
  | 'pause'
  | 'resume'
  | 'promote'

export interface StackPgInstance {
  name: string
  host: string
  port: number
  dataDir: string
  logFile: string
  /** postgres://keel_app:app@host:port/keel (runtime role: no superuser, no BYPASSRLS). */
  url: string
  /** postgres://keel_owner:owner@host:port/keel (owns schema public; use for migrations). */
  ownerUrl: string
  /** postgres://postgres@host:port/keel (superuser). */
  superUrl: string
}

export interface StackReplica extends StackPgInstance {
  name: StackReplicaName
  /** recovery_min_apply_delay of this replica in ms (replica1: 0, replica2: lagged). */
  applyDelayMs: number
}

export interface StackRedis {
  host: string
  port: number
  /** redis://host:port */
  url: string
  pidFile: string
  logFile: string
}

/** A PgBouncer in transaction mode in front of the primary (`node scripts/stack.mjs up pgbouncer`). */
export interface StackPgBouncer {
  name: 'plain' | 'discardAll' | 'prepared'
  host: string
  port: number
  poolMode: 'transaction'
  /** 'DISCARD ALL' run after every transaction (server_reset_query_always = 1), or null. */
  serverResetQuery: string | null
  /** '1.18' (Debian 12's) for plain and discardAll; '1.24.1' (built by the stack) for prepared. */
  version: string
  /** PgBouncer's max_prepared_statements: 0 (off) except on prepared (PgBouncer >= 1.21). */
  maxPreparedStatements: number
  /** postgres://keel_app:app@host:port/keel through PgBouncer. */
  url: string
  /** postgres://keel_owner:owner@host:port/keel through PgBouncer. */
  ownerUrl: string
  /** postgres://postgres:postgres@host:port/keel through PgBouncer (superuser; benchmarks). */
  superUrl: string
  logFile: string
}

/** Contents of <repo>/.keel/stack.json, written by `node scripts/stack.mjs up`. */
export interface KeelStack {
  stateDir: string
  binDir: string
  primary: StackPgInstance
  replicas: [StackReplica, StackReplica]
  redis: StackRedis
  /** Present while the on-demand PgBouncers run. */
  pgbouncer?: { plain: StackPgBouncer; discardAll: StackPgBouncer; prepared: StackPgBouncer }
  /** Present while the on-demand spare standby exists (`up spare`; `promote spare`, `down spare`). */
  spare?: StackPgInstance
}

/** Repository root (parent of scripts/). */
export declare const REPO_ROOT: string

/** Path of <repoRoot>/.keel/stack.json. */
export declare function stackFile(repoRoot?: string): string

/** Read <repoRoot>/.keel/stack.json; throws telling to run `node scripts/stack.mjs up` if missing. */
export declare function readStack(repoRoot?: string): Promise<KeelStack>

/**
 * Run `node scripts/stack.mjs <command> [name]`; resolves with stdout on exit 0,
 * rejects with an Error (message includes stderr) otherwise.
 * `start` waits until the component accepts connections (replicas: until streaming again).
 */
export declare function stackCtl(
  command: 'start' | 'stop' | 'kill' | 'pause' | 'resume',
  name: StackComponent,
  options?: { timeoutMs?: number },
): Promise<string>
export declare function stackCtl(
  command: 'up',
  name: 'pgbouncer',
  options?: { timeoutMs?: number },
): Promise<string>
/** The on-demand spare standby: `up spare`, `promote spare` (a new timeline), `down spare` (removed). */
export declare function stackCtl(
  command: 'up' | 'promote' | 'down' | 'start' | 'stop' | 'kill' | 'pause' | 'resume',
  name: 'spare',
  options?: { timeoutMs?: number },
): Promise<string>
export declare function stackCtl(
  command: 'up' | 'down' | 'status' | 'env',
  name?: undefined,
  options?: { timeoutMs?: number },
): Promise<string>

/** A Redis Cluster, 3 masters + 3 replicas (`node scripts/stack.mjs up redis-cluster`). */
export interface StackRedisCluster {
  /** redis-cluster-0 .. redis-cluster-5: the names `stackCtl('kill', name)` takes. */
  nodes: Array<{ name: string; port: number; url: string; pidFile: string }>
  /** redis://host:port of every node, as keel's `{ cluster: [...] }` takes them. */
  urls: string[]
  /** cluster-node-timeout: a master unanswered this long is failed over. */
  nodeTimeoutMs: number
}

/** A master and a replica watched by 3 Sentinels (`node scripts/stack.mjs up redis-sentinel`). */
export interface StackRedisSentinel {
  /** The master name the Sentinels monitor. */
  name: string
  /** redis://host:port of the 3 Sentinels, as keel's `{ sentinels: [...], name }` takes them. */
  sentinels: string[]
  /** redis-sentinel-0 (first master) and redis-sentinel-1 (first replica). */
  nodes: Array<{ name: string; port: number; url: string }>
  downAfterMs: number
}

/** stack.json while the on-demand Redis topologies run. */
export interface KeelStackTopologies {
  redisCluster?: StackRedisCluster
  redisSentinel?: StackRedisSentinel
}

/** On demand: a Redis Cluster or Sentinel setup (stack.json's `redisCluster` / `redisSentinel`). */
export declare function stackCtl(
  command: 'up',
  name: 'redis-cluster' | 'redis-sentinel',
  options?: { timeoutMs?: number },
): Promise<string>
/** Fault injection on one node of a Redis topology: redis-cluster-0..5, redis-sentinel-0..1, redis-sentinel-s0..s2. */
export declare function stackCtl(
  command: 'start' | 'stop' | 'kill',
  name: `redis-cluster-${number}` | `redis-sentinel-${number}` | `redis-sentinel-s${number}`,
  options?: { timeoutMs?: number },
): Promise<string>
