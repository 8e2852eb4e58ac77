#!/usr/bin/env node
// Local service stack for keel: a Postgres primary, two streaming replicas
// (replica2 with a recovery_min_apply_delay) and a Redis, each on its own
// free 127.0.0.1 port. Node built-ins only.
//
//   node scripts/stack.mjs up | down | status | env
//   node scripts/stack.mjs stop|start|kill primary|replica1|replica2|redis|pgbouncer
//   node scripts/stack.mjs pause|resume primary|replica1|replica2
//   node scripts/stack.mjs up pgbouncer   (on demand: PgBouncers in transaction mode in front of the primary: 1.18 twice, 1.24 built once)
//   node scripts/stack.mjs up redis-cluster|redis-sentinel   (on demand, scripts/stack-redis.mjs)
//   node scripts/stack.mjs up spare | promote spare | down spare   (on demand: a third standby to promote)
//   node scripts/stack.mjs stop|start|kill redis-cluster-0..5|redis-sentinel-0..1|redis-sentinel-s0..s2
//
// State (data dirs, sockets, logs, pid files) lives outside the repo, in
// /tmp/keel-stack-<sha1(repo root)[0..10]> or $KEEL_STACK_DIR, so that the
// `postgres` OS user can reach it even when the repo is under /root.
// Connection info goes to <repo>/.keel/stack.json and <repo>/.keel/stack.env.
//
// The machine's own Postgres (5432) and Redis (6379) are never used.

import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensurePreparedPgBouncer, PREPARED_PGBOUNCER_VERSION } from './stack/pgbouncer-build.mjs'
import { createRedisTopologies, parseNodeName, TOPOLOGIES } from './stack-redis.mjs'

// ---------------------------------------------------------------------------
// Constants and paths

const SCRIPT = fileURLToPath(import.meta.url)
const REPO_ROOT = path.resolve(path.dirname(SCRIPT), '..')
const KEEL_DIR = path.join(REPO_ROOT, '.keel')
const STACK_JSON = path.join(KEEL_DIR, 'stack.json')
const STACK_ENV = path.join(KEEL_DIR, 'stack.env')

const sha1 = (s) => crypto.createHash('sha1').update(s).digest('hex')

const STATE_DIR = path.resolve(
  process.env.KEEL_STACK_DIR || path.join('/tmp', `keel-stack-${sha1(REPO_ROOT).slice(0, 10)}`),
)
const LOCK_DIR = `${STATE_DIR}.lock`
const STATE_ID = sha1(STATE_DIR).slice(0, 8)

const PG_NAMES = ['primary', 'replica1', 'replica2']
const REPLICAS = ['replica1', 'replica2']
const COMPONENTS = [...PG_NAMES, 'redis']
// Started on demand (`up pgbouncer`) by the suites that need them, not by a plain `up`.
const ON_DEMAND = ['pgbouncer', 'spare', ...TOPOLOGIES]
// A third standby of the primary, started on demand (`up spare`) to be promoted (`promote spare`) by a
// failover rehearsal or test, then thrown away (`down spare`): the shared primary and replicas are
// never promoted, so the suites that run after one keep their stack.
const SPARE = 'spare'
// Two PgBouncers in transaction mode in front of the primary: `plain` keeps server connections as
// they are between clients (PgBouncer's default for transaction pooling), `discardAll` runs
// DISCARD ALL after every transaction (server_reset_query_always = 1).
// plain and discardAll: Debian's PgBouncer (1.18); prepared: >= 1.21 with max_prepared_statements.
const BOUNCERS = ['plain', 'discardAll', 'prepared']
const RESERVED_PORTS = new Set([5432, 6379])
const HOST = '127.0.0.1'
const DEFAULT_APPLY_DELAY_MS = 1500

const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0

const paths = {
  stateFile: path.join(STATE_DIR, 'state.json'),
  marker: path.join(STATE_DIR, '.keel-stack'),
  sockDir: path.join(STATE_DIR, 'sock'),
  logDir: path.join(STATE_DIR, 'log'),
  dataDir: (name) => path.join(STATE_DIR, name),
  pgLog: (name) => path.join(STATE_DIR, 'log', `${name}.log`),
  redisDir: path.join(STATE_DIR, 'redis'),
  redisPid: path.join(STATE_DIR, 'redis', 'redis.pid'),
  redisLog: path.join(STATE_DIR, 'redis', 'redis.log'),
  bouncerDir: path.join(STATE_DIR, 'pgbouncer'),
  bouncerFile: (name, ext) => path.join(STATE_DIR, 'pgbouncer', `${name}.${ext}`),
}

// Postgres cluster_name: shows up in the ps title of every child process
// ("postgres: <cluster_name>: ..."), which lets `kill` find orphans.
const clusterName = (name) => `keel-${STATE_ID}-${name}`

// ---------------------------------------------------------------------------
// Small utilities

const T0 = Date.now()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

class StackError extends Error {}

// Redis Cluster and Sentinel (on demand); their processes live under the state dir.
const topologies = createRedisTopologies({
  stateDir: STATE_DIR,
  redisServer: findRedisServer() ?? 'redis-server',
  log: (msg) => log(msg),
  fail: (msg) => {
    throw new StackError(msg)
  },
})

function log(msg) {
  process.stderr.write(`[stack +${((Date.now() - T0) / 1000).toFixed(1)}s] ${msg}\n`)
}

function exists(p) {
  try {
    fs.accessSync(p)
    return true
  } catch {
    return false
  }
}

function tail(file, lines = 30) {
  try {
    const text = fs.readFileSync(file, 'utf8')
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd()
  } catch {
    return `(no log at ${file})`
  }
}

function writeFileAtomic(file, content, mode = 0o644) {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, content, { mode })
  fs.chmodSync(tmp, mode)
  fs.renameSync(tmp, file)
}

function which(cmd, extraDirs = []) {
  const dirs = [...(process.env.PATH || '').split(':').filter(Boolean), ...extraDirs]
  for (const d of dirs) {
    const p = path.join(d, cmd)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      if (fs.statSync(p).isFile()) return p
    } catch {
      /* next */
    }
  }
  return null
}

const RUNUSER = IS_ROOT ? which('runuser', ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) : null

let pgUserCache
function pgUser() {
  if (!IS_ROOT) return null
  if (pgUserCache) return pgUserCache
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8', timeout: 5000 })
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8', timeout: 5000 })
  if (uid.status !== 0 || gid.status !== 0) {
    throw new StackError(
      'running as root but there is no `postgres` OS user (Postgres refuses to run as root). ' +
        'Install the postgresql package (apt-get install postgresql) or run as a non-root user.',
    )
  }
  pgUserCache = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
  return pgUserCache
}

/** chown a path to the postgres user (root only). */
function chownPg(p, recursive = false) {
  if (!IS_ROOT) return
  const { uid, gid } = pgUser()
  fs.chownSync(p, uid, gid)
  if (recursive && fs.statSync(p).isDirectory()) {
    for (const e of fs.readdirSync(p)) chownPg(path.join(p, e), true)
  }
}

function mkdirFor(p, { pg = false, mode = 0o755 } = {}) {
  fs.mkdirSync(p, { recursive: true })
  fs.chmodSync(p, mode)
  if (pg) chownPg(p)
}

function childEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    // never let PGHOST/PGPORT/PGDATA/... point a child at the system server
    if (k.startsWith('PG') || k.startsWith('PSQL')) continue
    env[k] = v
  }
  env.LC_ALL = 'C'
  env.LANG = 'C'
  return { ...env, ...extra }
}

/**
 * Run a command with a hard timeout. Resolves { code, stdout, stderr, timedOut }.
 * asPg: run as the `postgres` OS user when we are root.
 */
function run(cmd, args, { timeoutMs = 30_000, asPg = false, input, cwd, env } = {}) {
  let file = cmd
  let argv = args
  const opts = {
    cwd: cwd ?? (exists(STATE_DIR) ? STATE_DIR : '/'),
    env: childEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true, // own process group, so a timeout can kill the whole tree
  }
  if (asPg && IS_ROOT) {
    if (RUNUSER) {
      file = RUNUSER
      argv = ['-u', 'postgres', '--', cmd, ...args]
    } else {
      opts.uid = pgUser().uid
      opts.gid = pgUser().gid
    }
  }
  return new Promise((resolve) => {
    let stdout = ''
    let stderr = ''
    let timedOut = false
    let done = false
    let child
    const finish = (code) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve({ code, stdout, stderr, timedOut })
    }
    const timer = setTimeout(() => {
      timedOut = true
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {
        try {
          child.kill('SIGKILL')
        } catch {
          /* gone */
        }
      }
      // If something detached still holds our pipes, don't wait for 'close'.
      setTimeout(() => finish(-1), 1000).unref()
    }, timeoutMs)
    try {
      child = spawn(file, argv, opts)
    } catch (e) {
      stderr = String(e.message)
      finish(-1)
      return
    }
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', (e) => {
      stderr += `${e.message}\n`
      finish(-1)
    })
    child.on('close', (code) => finish(code ?? -1))
    child.stdin.on('error', () => {})
    child.stdin.end(input ?? '')
  })
}

function describeFailure(what, r) {
  const out = `${r.stderr}\n${r.stdout}`.trim()
  return `${what} failed${r.timedOut ? ' (timed out)' : ` (exit ${r.code})`}${out ? `:\n${out}` : ''}`
}

// ---------------------------------------------------------------------------
// Processes

function readPid(file) {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').split('\n')[0].trim(), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : null
  } catch {
    return null
  }
}

function procStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return { state: rest[0], ppid: Number(rest[1]) }
  } catch {
    return null
  }
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim()
  } catch {
    return ''
  }
}

/** Alive and not a zombie (PID 1 in a container may never reap). */
function isAlive(pid) {
  if (!pid) return false
  try {
    process.kill(pid, 0)
  } catch (e) {
    if (e.code !== 'EPERM') return false
  }
  const st = procStat(pid)
  if (st && st.state === 'Z') return false
  return true
}

function allPids() {
  try {
    return fs
      .readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
  } catch {
    return []
  }
}

async function waitDead(pids, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig)
    return true
  } catch {
    return false
  }
}

async function waitFor(fn, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return true
    if (Date.now() > deadline) return false
    await sleep(intervalMs)
  }
}

// ---------------------------------------------------------------------------
// Ports

function isPortFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

async function allocatePorts(n) {
  const held = []
  const ports = []
  try {
    while (ports.length < n) {
      const srv = net.createServer()
      await new Promise((resolve, reject) => {
        srv.once('error', reject)
        srv.listen({ port: 0, host: HOST, exclusive: true }, resolve)
      })
      held.push(srv)
      const { port } = srv.address()
      if (!RESERVED_PORTS.has(port) && !ports.includes(port)) ports.push(port)
      if (held.length > n + 20) throw new StackError('could not find free ports on 127.0.0.1')
    }
  } finally {
    await Promise.all(held.map((s) => new Promise((r) => s.close(() => r()))))
  }
  return ports
}

async function assertPortFree(name, port) {
  if (await isPortFree(port)) return
  throw new StackError(
    `port ${port} (recorded for ${name}) is now in use by another process, so ${name} cannot be started on it.\n` +
      'Recreate the stack on fresh ports with: node scripts/stack.mjs down && node scripts/stack.mjs up',
  )
}

// ---------------------------------------------------------------------------
// Binaries (and installing them)

function pgBinComplete(dir) {
  return ['postgres', 'initdb', 'pg_ctl', 'pg_basebackup', 'pg_isready', 'psql'].every((b) =>
    exists(path.join(dir, b)),
  )
}

function findPgBinDir() {
  if (process.env.KEEL_STACK_PG_BIN) {
    const d = path.resolve(process.env.KEEL_STACK_PG_BIN)
    return pgBinComplete(d) ? d : null
  }
  let versions = []
  try {
    versions = fs.readdirSync('/usr/lib/postgresql')
  } catch {
    /* none */
  }
  const verKey = (v) => v.split('.').map((x) => Number.parseInt(x, 10) || 0)
  const cands = versions
    .filter((v) => pgBinComplete(`/usr/lib/postgresql/${v}/bin`))
    .sort((a, b) => {
      const ka = verKey(a)
      const kb = verKey(b)
      return kb[0] - ka[0] || (kb[1] ?? 0) - (ka[1] ?? 0)
    })
  if (cands.length) return `/usr/lib/postgresql/${cands[0]}/bin`
  const r = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8', timeout: 5000 })
  if (r.status === 0 && pgBinComplete(r.stdout.trim())) return r.stdout.trim()
  return null
}

function findRedisServer() {
  return which('redis-server', ['/usr/bin', '/usr/local/bin', '/usr/sbin', '/bin'])
}

function installWithApt(pkgs) {
  const POLICY = '/usr/sbin/policy-rc.d'
  let previous = null
  try {
    previous = fs.readFileSync(POLICY)
  } catch {
    /* none */
  }
  // Keep dpkg from starting the packaged services (a cluster on 5432, redis on 6379).
  fs.writeFileSync(POLICY, '#!/bin/sh\n# temporary, written by keel scripts/stack.mjs\nexit 101\n')
  fs.chmodSync(POLICY, 0o755)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const step = (args, timeout) => {
    log(`$ apt-get ${args.join(' ')}`)
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env, timeout })
    if (r.status !== 0) {
      throw new StackError(
        `apt-get ${args.join(' ')} failed (${r.error ? r.error.message : `exit ${r.status}`}).`,
      )
    }
  }
  try {
    step(['update'], 300_000)
    step(['install', '-y', ...pkgs], 900_000)
  } finally {
    if (previous) {
      fs.writeFileSync(POLICY, previous)
      fs.chmodSync(POLICY, 0o755)
    } else {
      fs.rmSync(POLICY, { force: true })
    }
  }
}

function ensureBinaries() {
  let binDir = findPgBinDir()
  let redis = findRedisServer()
  if (binDir && redis) return { binDir, redis }
  const pkgs = []
  if (!binDir) pkgs.push('postgresql')
  if (!redis) pkgs.push('redis-server')
  if (IS_ROOT && which('apt-get', ['/usr/bin'])) {
    log(`missing ${pkgs.join(' and ')}; installing with apt-get`)
    installWithApt(pkgs)
    binDir = findPgBinDir()
    redis = findRedisServer()
    if (binDir && redis) return { binDir, redis }
  }
  throw new StackError(
    `missing ${!binDir ? 'PostgreSQL server binaries (/usr/lib/postgresql/*/bin/postgres)' : ''}` +
      `${!binDir && !redis ? ' and ' : ''}${!redis ? 'redis-server' : ''}.\n` +
      'Install them with: apt-get install postgresql redis-server',
  )
}

// ---------------------------------------------------------------------------
// State

function loadState() {
  try {
    return JSON.parse(fs.readFileSync(paths.stateFile, 'utf8'))
  } catch {
    return null
  }
}

function saveState(st) {
  writeFileAtomic(paths.stateFile, `${JSON.stringify(st, null, 2)}\n`)
}

function requireState() {
  const st = loadState()
  if (!st?.complete) {
    throw new StackError(
      `the keel stack is not up (no state in ${STATE_DIR}); run: node scripts/stack.mjs up`,
    )
  }
  return st
}

const pgBin = (st, b) => path.join(st.binDir, b)

// ---------------------------------------------------------------------------
// Lock (serialises mutating commands, e.g. parallel test workers)

async function acquireLock(timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      fs.mkdirSync(LOCK_DIR)
      fs.writeFileSync(path.join(LOCK_DIR, 'pid'), String(process.pid))
      const release = () => fs.rmSync(LOCK_DIR, { recursive: true, force: true })
      process.on('exit', release)
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
        process.on(sig, () => {
          release()
          process.exit(130)
        })
      }
      return
    } catch (e) {
      if (e.code !== 'EEXIST') throw e
    }
    const holder = readPid(path.join(LOCK_DIR, 'pid'))
    let age = 0
    try {
      age = Date.now() - fs.statSync(LOCK_DIR).mtimeMs
    } catch {
      continue
    }
    if ((holder && !isAlive(holder)) || (!holder && age > 5000)) {
      fs.rmSync(LOCK_DIR, { recursive: true, force: true })
      continue
    }
    if (Date.now() > deadline) {
      throw new StackError(`timed out waiting for the stack lock ${LOCK_DIR} (held by pid ${holder})`)
    }
    await sleep(100)
  }
}

// ---------------------------------------------------------------------------
// Postgres

function pgPort(st, name) {
  return st.ports[name]
}

function postmasterPid(name) {
  const pid = readPid(path.join(paths.dataDir(name), 'postmaster.pid'))
  if (!pid || !isAlive(pid)) return null
  return cmdline(pid).includes(paths.dataDir(name)) ? pid : null
}

/**
 * Remove lock files left by a dead postmaster. Needed because a SIGKILLed
 * postmaster is reparented to PID 1, and a container's PID 1 may leave it a
 * zombie for a while: Postgres' own check (kill(pid, 0)) then still sees it
 * as running and refuses to start ("lock file postmaster.pid already exists").
 * Only called when postmasterPid() found no live postmaster for this data dir.
 */
function removeStaleLocks(st, name) {
  const files = [
    path.join(paths.dataDir(name), 'postmaster.pid'),
    path.join(paths.sockDir, `.s.PGSQL.${pgPort(st, name)}.lock`),
  ]
  for (const f of files) {
    const pid = readPid(f)
    if (pid && isAlive(pid) && cmdline(pid).includes('postgres')) continue // a live postgres: let it be
    if (exists(f)) fs.rmSync(f, { force: true })
  }
}

async function pgReady(st, name) {
  const r = await run(
    pgBin(st, 'pg_isready'),
    ['-q', '-h', HOST, '-p', String(pgPort(st, name)), '-U', 'postgres', '-d', 'postgres', '-t', '2'],
    { timeoutMs: 5000 },
  )
  return r.code === 0
}

async function psql(st, port, sql, { db = 'postgres', timeoutMs = 15_000 } = {}) {
  const r = await run(
    pgBin(st, 'psql'),
    [
      '-X',
      '-q',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      HOST,
      '-p',
      String(port),
      '-U',
      'postgres',
      '-d',
      db,
      '-f',
      '-',
    ],
    { input: sql, timeoutMs, env: { PGCONNECT_TIMEOUT: '5' } },
  )
  if (r.code !== 0) throw new StackError(describeFailure(`psql on port ${port}`, r))
  return r.stdout
}

function pgConf(st, name) {
  const lines = [
    '# Written by scripts/stack.mjs on every start; edits are overwritten.',
    `listen_addresses = '${HOST}'`,
    `port = ${pgPort(st, name)}`,
    `unix_socket_directories = '${paths.sockDir}'`,
    `cluster_name = '${clusterName(name)}'`,
    'max_connections = 200',
    'shared_buffers = 64MB',
    'wal_level = replica',
    'max_wal_senders = 10',
    'max_replication_slots = 10',
    'hot_standby = on',
    'hot_standby_feedback = on',
    // quick feedback / failure detection / reconnects for fault-injection tests
    'wal_receiver_status_interval = 1s',
    'wal_sender_timeout = 5s',
    'wal_receiver_timeout = 5s',
    'wal_retrieve_retry_interval = 500ms',
    'max_standby_streaming_delay = 5s',
    'fsync = off',
    'full_page_writes = off',
    'logging_collector = off',
    "log_destination = 'stderr'",
    "log_line_prefix = '%m [%p] %q%u@%d '",
  ]
  if (name !== 'primary') {
    lines.push(
      `primary_conninfo = 'host=${HOST} port=${st.ports.primary} user=postgres application_name=${name} connect_timeout=2'`,
      `primary_slot_name = '${name}'`,
      `recovery_min_apply_delay = '${applyDelay(st, name)}ms'`,
    )
  }
  return `${lines.join('\n')}\n`
}

function applyDelay(st, name) {
  return name === 'replica2' ? st.applyDelayMs : 0
}

function writePgConfig(st, name) {
  const dir = paths.dataDir(name)
  const conf = path.join(dir, 'keel.conf')
  fs.writeFileSync(conf, pgConf(st, name))
  chownPg(conf)
  const hba = path.join(dir, 'pg_hba.conf')
  fs.writeFileSync(
    hba,
    [
      '# Written by scripts/stack.mjs: local test stack, trust everything on loopback.',
      'local   all             all                     trust',
      `host    all             all     ${HOST}/32      trust`,
      'local   replication     all                     trust',
      `host    replication     all     ${HOST}/32      trust`,
      '',
    ].join('\n'),
  )
  chownPg(hba)
  const main = path.join(dir, 'postgresql.conf')
  const text = fs.readFileSync(main, 'utf8')
  if (!text.includes("include 'keel.conf'")) {
    fs.appendFileSync(main, "\n# keel local stack settings\ninclude 'keel.conf'\n")
  }
  // pg_basebackup -R writes primary_conninfo here; keel.conf owns that now.
  const auto = path.join(dir, 'postgresql.auto.conf')
  fs.writeFileSync(
    auto,
    '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n',
  )
  chownPg(auto)
}

function killOrphans(name) {
  const prefix = `postgres: ${clusterName(name)}: `
  const pids = allPids().filter((pid) => pid !== process.pid && cmdline(pid).startsWith(prefix))
  for (const pid of pids) signal(pid, 'SIGKILL')
  return pids
}

async function startPg(st, name) {
  const dataDir = paths.dataDir(name)
  const port = pgPort(st, name)
  if (!exists(path.join(dataDir, 'PG_VERSION'))) {
    throw new StackError(
      `${name} data dir ${dataDir} is missing; recreate the stack: node scripts/stack.mjs down && node scripts/stack.mjs up`,
    )
  }
  if (postmasterPid(name)) {
    if (await waitFor(() => pgReady(st, name), 30_000, 200)) return false
    throw new StackError(
      `${name} (pid ${postmasterPid(name)}) is running but not accepting connections on port ${port}.\n` +
        `--- tail of ${paths.pgLog(name)} ---\n${tail(paths.pgLog(name))}`,
    )
  }
  // Leftover children of a SIGKILLed postmaster would block the restart
  // ("pre-existing shared memory block is still in use").
  const orphans = killOrphans(name)
  if (orphans.length) await waitDead(orphans, 10_000)
  await assertPortFree(name, port)
  removeStaleLocks(st, name)
  writePgConfig(st, name)
  let r
  for (let attempt = 1; ; attempt++) {
    r = await run(
      pgBin(st, 'pg_ctl'),
      ['-D', dataDir, '-l', paths.pgLog(name), '-w', '-t', '60', '-s', 'start'],
      { asPg: true, timeoutMs: 75_000 },
    )
    if (r.code === 0) break
    const logTail = tail(paths.pgLog(name), 15)
    if (attempt < 3 && /shared memory block|lock file .* already exists/i.test(logTail)) {
      killOrphans(name)
      await sleep(500)
      if (postmasterPid(name)) break // someone else started it meanwhile
      removeStaleLocks(st, name)
      continue
    }
    throw new StackError(
      `${describeFailure(`starting ${name} on port ${port} (pg_ctl start)`, r)}\n` +
        `--- tail of ${paths.pgLog(name)} ---\n${tail(paths.pgLog(name))}`,
    )
  }
  if (!(await waitFor(() => pgReady(st, name), 30_000, 100))) {
    throw new StackError(
      `${name} started but is not accepting connections on port ${port} after 30s.\n` +
        `--- tail of ${paths.pgLog(name)} ---\n${tail(paths.pgLog(name))}`,
    )
  }
  return true
}

async function stopPg(st, name) {
  const pid = postmasterPid(name)
  if (!pid) {
    killOrphans(name)
    return false
  }
  const ctl = st?.binDir ? pgBin(st, 'pg_ctl') : null
  for (const mode of ['fast', 'immediate']) {
    if (!ctl) break
    const r = await run(ctl, ['-D', paths.dataDir(name), '-m', mode, '-w', '-t', '30', '-s', 'stop'], {
      asPg: true,
      timeoutMs: 40_000,
    })
    if (r.code === 0 && (await waitDead([pid], 5000))) return true
    log(`warning: ${describeFailure(`pg_ctl stop -m ${mode} (${name})`, r)}`)
  }
  await killPg(name)
  return true
}

async function killPg(name) {
  const pid = postmasterPid(name)
  if (!pid) {
    const orphans = killOrphans(name)
    if (orphans.length) await waitDead(orphans, 10_000)
    return false
  }
  const children = allPids().filter((p) => procStat(p)?.ppid === pid)
  signal(pid, 'SIGKILL')
  for (const c of children) signal(c, 'SIGKILL')
  const orphans = killOrphans(name)
  if (!(await waitDead([pid, ...children, ...orphans], 10_000))) {
    throw new StackError(`${name}: processes still alive 10s after SIGKILL`)
  }
  return true
}

/** The postmaster and every process of its cluster (backends, walsenders, background workers). */
function clusterPids(name) {
  const pid = postmasterPid(name)
  const prefix = `postgres: ${clusterName(name)}: `
  const children = allPids().filter((p) => p !== process.pid && cmdline(p).startsWith(prefix))
  return pid ? [pid, ...children.filter((p) => p !== pid)] : children
}

/**
 * SIGSTOP (pause) or SIGCONT (resume) a whole cluster: a host that stops answering without closing
 * its sockets (a frozen VM, a stalled disk). The postmaster goes first on pause, so it forks nothing
 * new meanwhile, and last on resume.
 */
function freezePg(name, how) {
  const pids = clusterPids(name)
  if (pids.length === 0) throw new StackError(`${name} is not running`)
  const ordered = how === 'SIGSTOP' ? pids : [...pids.slice(1), pids[0]]
  for (const pid of ordered) signal(pid, how)
  return pids.length
}

async function replicationRows(st) {
  const out = await psql(st, st.ports.primary, 'select application_name, state from pg_stat_replication;', {
    timeoutMs: 5000,
  })
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, state] = l.split('|')
      return { name, state }
    })
}

async function waitStreaming(st, names, timeoutMs) {
  if (!names.length) return
  const deadline = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    try {
      const rows = await replicationRows(st)
      last = JSON.stringify(rows)
      if (names.every((n) => rows.some((r) => r.name === n && r.state === 'streaming'))) return
    } catch (e) {
      last = e.message
    }
    if (Date.now() > deadline) {
      const logs = names
        .map((n) => `--- tail of ${paths.pgLog(n)} ---\n${tail(paths.pgLog(n), 15)}`)
        .join('\n')
      throw new StackError(
        `${names.join(', ')} not streaming from the primary after ${Math.round(timeoutMs / 1000)}s ` +
          `(pg_stat_replication: ${last})\n${logs}`,
      )
    }
    await sleep(150)
  }
}

async function initPrimary(st) {
  const dir = paths.dataDir('primary')
  mkdirFor(dir, { pg: true, mode: 0o700 })
  const r = await run(
    pgBin(st, 'initdb'),
    ['-D', dir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '-N', '--no-instructions'],
    { asPg: true, timeoutMs: 120_000 },
  )
  if (r.code !== 0) throw new StackError(describeFailure('initdb (primary)', r))
}

async function setupDatabase(st) {
  const port = st.ports.primary
  await psql(
    st,
    port,
    `
CREATE ROLE keel_owner LOGIN PASSWORD 'owner' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE keel_app LOGIN PASSWORD 'app' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE keel;
GRANT CONNECT ON DATABASE keel TO keel_app;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE keel TO keel_owner;
`,
  )
  await psql(
    st,
    port,
    `
ALTER SCHEMA public OWNER TO keel_owner;
GRANT USAGE ON SCHEMA public TO keel_app;
ALTER DEFAULT PRIVILEGES FOR ROLE keel_owner IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO keel_app;
ALTER DEFAULT PRIVILEGES FOR ROLE keel_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO keel_app;
`,
    { db: 'keel' },
  )
}

/**
 * Create the physical slots for all replicas up front, reserving WAL at once.
 * (`pg_basebackup -C` creates its slot only after the backup's checkpoint, so
 * two base backups run in parallel can race: the second one's checkpoint may
 * recycle WAL the first one still needs -- "requested WAL segment ... has
 * already been removed". Slots that exist before either backup starts close
 * that window.)
 */
async function createSlots(st, names) {
  const sql = names
    .map(
      (n) =>
        `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '${n}' and not active;\n` +
        `select pg_create_physical_replication_slot('${n}', true);\n`,
    )
    .join('')
  await psql(st, st.ports.primary, sql)
}

/** pg_basebackup -R -X stream -S <name> into a fresh data dir (slot from createSlots). */
async function createReplica(st, name) {
  const dir = paths.dataDir(name)
  fs.rmSync(dir, { recursive: true, force: true })
  mkdirFor(dir, { pg: true, mode: 0o700 })
  const args = ['-h', HOST, '-p', String(st.ports.primary), '-U', 'postgres', '-D', dir]
  args.push('-R', '-X', 'stream', '-S', name, '-c', 'fast', '-N', '-w')
  const r = await run(pgBin(st, 'pg_basebackup'), args, { asPg: true, timeoutMs: 120_000 })
  if (r.code !== 0) throw new StackError(describeFailure(`pg_basebackup (${name})`, r))
  chownPg(dir, true)
}

// ---------------------------------------------------------------------------
// Redis

function redisPid() {
  const pid = readPid(paths.redisPid)
  if (!pid || !isAlive(pid)) return null
  return cmdline(pid).includes('redis') ? pid : null
}

/** Send one inline command over raw TCP, resolve the first reply line (or null). */
function redisCommand(port, command, timeoutMs = 2000) {
  return new Promise((resolve) => {
    let buf = ''
    let settled = false
    const done = (v) => {
      if (settled) return
      settled = true
      sock.destroy()
      resolve(v)
    }
    const sock = net.connect({ host: HOST, port })
    sock.setTimeout(timeoutMs, () => done(null))
    sock.on('error', () => done(buf ? buf.split('\r\n')[0] : null))
    sock.on('connect', () => sock.write(`${command}\r\n`))
    sock.on('data', (d) => {
      buf += d
      if (buf.includes('\r\n')) done(buf.split('\r\n')[0])
    })
    sock.on('close', () => done(buf ? buf.split('\r\n')[0] : null))
  })
}

const redisPing = async (port) => (await redisCommand(port, 'PING')) === '+PONG'

async function startRedis(st) {
  const port = st.ports.redis
  if (redisPid()) {
    if (await waitFor(() => redisPing(port), 10_000, 100)) return false
    throw new StackError(`redis (pid ${redisPid()}) is running but does not answer PING on port ${port}`)
  }
  await assertPortFree('redis', port)
  mkdirFor(paths.redisDir)
  fs.rmSync(paths.redisPid, { force: true })
  const r = await run(
    st.redisServer,
    [
      '--port',
      String(port),
      '--bind',
      HOST,
      '--save',
      '',
      '--appendonly',
      'no',
      '--daemonize',
      'yes',
      '--pidfile',
      paths.redisPid,
      '--logfile',
      paths.redisLog,
      '--dir',
      paths.redisDir,
    ],
    { timeoutMs: 15_000 },
  )
  if (r.code !== 0) {
    throw new StackError(
      `${describeFailure(`starting redis on port ${port}`, r)}\n--- tail of ${paths.redisLog} ---\n${tail(paths.redisLog)}`,
    )
  }
  if (!(await waitFor(() => redisPing(port), 15_000, 50))) {
    throw new StackError(
      `redis did not answer PING on port ${port} within 15s\n--- tail of ${paths.redisLog} ---\n${tail(paths.redisLog)}`,
    )
  }
  return true
}

async function stopRedis(st) {
  const pid = redisPid()
  if (!pid) return false
  if (st?.ports?.redis) await redisCommand(st.ports.redis, 'SHUTDOWN NOSAVE', 3000)
  if (await waitDead([pid], 5000)) return true
  signal(pid, 'SIGTERM')
  if (await waitDead([pid], 5000)) return true
  signal(pid, 'SIGKILL')
  await waitDead([pid], 5000)
  return true
}

async function killRedis() {
  const pid = redisPid()
  if (!pid) return false
  signal(pid, 'SIGKILL')
  if (!(await waitDead([pid], 10_000))) throw new StackError(`redis pid ${pid} still alive 10s after SIGKILL`)
  return true
}

// ---------------------------------------------------------------------------
// PgBouncer (on demand)

function findPgBouncer() {
  return which('pgbouncer', ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/sbin'])
}

function ensurePgBouncer() {
  let bin = findPgBouncer()
  if (bin) return bin
  if (IS_ROOT && which('apt-get', ['/usr/bin'])) {
    log('missing pgbouncer; installing with apt-get')
    installWithApt(['pgbouncer'])
    bin = findPgBouncer()
    if (bin) return bin
  }
  throw new StackError('missing pgbouncer. Install it with: apt-get install pgbouncer')
}

function bouncerPid(name) {
  const pid = readPid(paths.bouncerFile(name, 'pid'))
  if (!pid || !isAlive(pid)) return null
  return cmdline(pid).includes('pgbouncer') ? pid : null
}

/** Answers a TCP connect (PgBouncer accepts before it has a server connection). */
function tcpReady(port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port })
    const done = (v) => {
      sock.destroy()
      resolve(v)
    }
    sock.setTimeout(timeoutMs, () => done(false))
    sock.on('connect', () => done(true))
    sock.on('error', () => done(false))
  })
}

function bouncerIni(st, name) {
  const file = (ext) => paths.bouncerFile(name, ext)
  const lines = [
    '; Written by scripts/stack.mjs on every start; edits are overwritten.',
    '[databases]',
    `keel = host=${HOST} port=${st.ports.primary} dbname=keel`,
    '',
    '[pgbouncer]',
    `listen_addr = ${HOST}`,
    `listen_port = ${st.ports.pgbouncer[name]}`,
    'unix_socket_dir =',
    // The primary trusts loopback; clients prove the stack's role passwords to PgBouncer.
    'auth_type = scram-sha-256',
    `auth_file = ${file('users')}`,
    'pool_mode = transaction',
    // Few server connections for many clients: what makes them share server connections.
    'default_pool_size = 4',
    'max_client_conn = 500',
    'ignore_startup_parameters = extra_float_digits',
    `pidfile = ${file('pid')}`,
    `logfile = ${file('log')}`,
    'admin_users = keel_owner',
  ]
  if (name === 'discardAll') lines.push('server_reset_query = DISCARD ALL', 'server_reset_query_always = 1')
  // PgBouncer >= 1.21 tracks the client's protocol-level prepared statements and prepares them on
  // whichever server connection the next transaction gets.
  if (name === 'prepared') lines.push('max_prepared_statements = 200')
  return `${lines.join('\n')}\n`
}

async function startBouncer(st, name) {
  const port = st.ports.pgbouncer[name]
  if (bouncerPid(name)) {
    if (await waitFor(() => tcpReady(port), 10_000, 100)) return false
    throw new StackError(`pgbouncer ${name} (pid ${bouncerPid(name)}) does not accept connections on ${port}`)
  }
  await assertPortFree(`pgbouncer ${name}`, port)
  mkdirFor(paths.bouncerDir, { pg: true })
  const ini = paths.bouncerFile(name, 'ini')
  const users = paths.bouncerFile(name, 'users')
  // The stack's roles; the superuser (trusted by the primary) gets a password here for benchmarks.
  writeFileAtomic(users, '"keel_app" "app"\n"keel_owner" "owner"\n"postgres" "postgres"\n', 0o600)
  writeFileAtomic(ini, bouncerIni(st, name), 0o600)
  chownPg(users)
  chownPg(ini)
  fs.rmSync(paths.bouncerFile(name, 'pid'), { force: true })
  // PgBouncer refuses to run as root: as root it runs as the postgres OS user.
  const bin = name === 'prepared' ? st.pgbouncerPrepared : st.pgbouncer
  const r = await run(bin, ['-d', '-q', ini], { asPg: true, timeoutMs: 15_000 })
  if (r.code !== 0) {
    throw new StackError(
      `${describeFailure(`starting pgbouncer ${name} on port ${port}`, r)}\n` +
        `--- tail of ${paths.bouncerFile(name, 'log')} ---\n${tail(paths.bouncerFile(name, 'log'))}`,
    )
  }
  if (!(await waitFor(() => tcpReady(port), 15_000, 50))) {
    throw new StackError(
      `pgbouncer ${name} did not accept connections on port ${port} within 15s\n` +
        `--- tail of ${paths.bouncerFile(name, 'log')} ---\n${tail(paths.bouncerFile(name, 'log'))}`,
    )
  }
  return true
}

async function stopBouncer(name, sig = 'SIGTERM') {
  const pid = bouncerPid(name)
  if (!pid) return false
  signal(pid, sig)
  if (await waitDead([pid], 5000)) return true
  signal(pid, 'SIGKILL')
  if (!(await waitDead([pid], 5000)))
    throw new StackError(`pgbouncer ${name} pid ${pid} still alive after SIGKILL`)
  return true
}

/** Starts both PgBouncers (idempotent), on ports chosen the first time and kept in the state. */
async function upBouncers(st) {
  st.pgbouncer ??= ensurePgBouncer()
  st.pgbouncerPrepared = await ensurePreparedPgBouncer({ log, installWithApt, isRoot: IS_ROOT })
  if (!st.ports.pgbouncer) {
    const [plain, discardAll] = await allocatePorts(2)
    st.ports.pgbouncer = { plain, discardAll }
  }
  // A state from before the third PgBouncer: its port is added, the others kept.
  if (!st.ports.pgbouncer.prepared) [st.ports.pgbouncer.prepared] = await allocatePorts(1)
  saveState(st)
  const started = []
  for (const name of BOUNCERS) if (await startBouncer(st, name)) started.push(name)
  return started
}

// ---------------------------------------------------------------------------
// Output files

function pgEntry(st, name) {
  const port = st.ports[name]
  const base = `${HOST}:${port}/keel`
  return {
    name,
    host: HOST,
    port,
    dataDir: paths.dataDir(name),
    logFile: paths.pgLog(name),
    url: `postgres://keel_app:app@${base}`,
    ownerUrl: `postgres://keel_owner:owner@${base}`,
    superUrl: `postgres://postgres@${base}`,
  }
}

function bouncerEntry(st, name) {
  const port = st.ports.pgbouncer[name]
  const base = `${HOST}:${port}/keel`
  return {
    name,
    host: HOST,
    port,
    poolMode: 'transaction',
    serverResetQuery: name === 'discardAll' ? 'DISCARD ALL' : null,
    version: name === 'prepared' ? PREPARED_PGBOUNCER_VERSION : '1.18',
    maxPreparedStatements: name === 'prepared' ? 200 : 0,
    url: `postgres://keel_app:app@${base}`,
    ownerUrl: `postgres://keel_owner:owner@${base}`,
    superUrl: `postgres://postgres:postgres@${base}`,
    logFile: paths.bouncerFile(name, 'log'),
  }
}

function stackInfo(st) {
  const bouncers = st.ports.pgbouncer && BOUNCERS.every((n) => bouncerPid(n))
  return {
    stateDir: STATE_DIR,
    binDir: st.binDir,
    primary: pgEntry(st, 'primary'),
    replicas: REPLICAS.map((n) => ({ ...pgEntry(st, n), applyDelayMs: applyDelay(st, n) })),
    redis: {
      host: HOST,
      port: st.ports.redis,
      url: `redis://${HOST}:${st.ports.redis}`,
      pidFile: paths.redisPid,
      logFile: paths.redisLog,
    },
    ...(bouncers ? { pgbouncer: Object.fromEntries(BOUNCERS.map((n) => [n, bouncerEntry(st, n)])) } : {}),
    ...(st.ports[SPARE] && exists(paths.dataDir(SPARE)) ? { spare: pgEntry(st, SPARE) } : {}),
    ...topologies.info(st),
  }
}

const shQuote = (v) => (/^[A-Za-z0-9_@%+=:,./-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`)

function envText(info) {
  const vars = {
    KEEL_PG_PRIMARY_URL: info.primary.url,
    KEEL_PG_PRIMARY_OWNER_URL: info.primary.ownerUrl,
    KEEL_PG_PRIMARY_SUPER_URL: info.primary.superUrl,
    KEEL_PG_REPLICA1_URL: info.replicas[0].url,
    KEEL_PG_REPLICA2_URL: info.replicas[1].url,
    KEEL_REDIS_URL: info.redis.url,
  }
  return Object.entries(vars)
    .map(([k, v]) => `export ${k}=${shQuote(v)}\n`)
    .join('')
}

function writeOutputs(st) {
  const info = stackInfo(st)
  fs.mkdirSync(KEEL_DIR, { recursive: true })
  const ignore = path.join(KEEL_DIR, '.gitignore')
  if (!exists(ignore)) fs.writeFileSync(ignore, '# generated by scripts/stack.mjs\n*\n')
  writeFileAtomic(STACK_JSON, `${JSON.stringify(info, null, 2)}\n`)
  writeFileAtomic(STACK_ENV, envText(info))
  return info
}

function removeOutputs() {
  fs.rmSync(STACK_JSON, { force: true })
  fs.rmSync(STACK_ENV, { force: true })
}

function summary(info, verb) {
  const rel = path.relative(process.cwd(), STACK_JSON) || STACK_JSON
  const lines = [
    `keel stack ${verb} (state: ${STATE_DIR})`,
    `  primary   ${HOST}:${info.primary.port}  ${info.primary.url}`,
    ...info.replicas.map(
      (r) => `  ${r.name.padEnd(9)} ${HOST}:${r.port}  ${r.url}  (apply delay ${r.applyDelayMs}ms)`,
    ),
    `  redis     ${HOST}:${info.redis.port}  ${info.redis.url}`,
    `wrote ${rel} and ${path.join(path.dirname(rel), 'stack.env')}  (eval "$(node scripts/stack.mjs env)")`,
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}

// ---------------------------------------------------------------------------
// Teardown

function stateDirIsOurs() {
  if (!exists(STATE_DIR)) return true
  if (exists(paths.marker)) return true
  try {
    return fs.readdirSync(STATE_DIR).length === 0
  } catch {
    return false
  }
}

async function teardown() {
  if (!exists(STATE_DIR)) return
  if (!stateDirIsOurs()) {
    throw new StackError(
      `${STATE_DIR} exists but was not created by scripts/stack.mjs (no .keel-stack marker); refusing to delete it`,
    )
  }
  const st = loadState() ?? {}
  if (!st.binDir) st.binDir = findPgBinDir()
  const stopped = []
  await Promise.all(
    REPLICAS.map(async (n) => {
      if (await stopPg(st, n)) stopped.push(n)
    }),
  )
  if (await stopPg(st, SPARE)) stopped.push(SPARE)
  if (await stopPg(st, 'primary')) stopped.push('primary')
  if (await stopRedis(st)) stopped.push('redis')
  for (const name of BOUNCERS) if (await stopBouncer(name)) stopped.push(`pgbouncer ${name}`)
  stopped.push(...(await topologies.teardown(st)))
  fs.rmSync(STATE_DIR, { recursive: true, force: true })
  log(`stopped ${stopped.length ? stopped.join(', ') : 'nothing (was not running)'}; removed ${STATE_DIR}`)
}

// ---------------------------------------------------------------------------
// Commands

async function cmdUp() {
  const { binDir, redis } = ensureBinaries()
  await acquireLock()
  const existing = loadState()

  if (existing?.complete) {
    const st = existing
    const started = []
    if (await startPg(st, 'primary')) started.push('primary')
    const results = await Promise.all([
      ...REPLICAS.map(async (n) => ((await startPg(st, n)) ? n : null)),
      (async () => ((await startRedis(st)) ? 'redis' : null))(),
    ])
    started.push(...results.filter(Boolean))
    await waitStreaming(st, REPLICAS, 60_000)
    const info = writeOutputs(st)
    if (started.length) log(`restarted ${started.join(', ')}`)
    summary(info, started.length ? `up (restarted ${started.join(', ')})` : 'already up')
    return 0
  }

  if (existing || exists(STATE_DIR)) {
    log(`found an incomplete stack in ${STATE_DIR}; recreating it`)
    await teardown()
  }

  // --- from scratch ---
  const sockPath = path.join(STATE_DIR, 'sock', '.s.PGSQL.65535')
  if (Buffer.byteLength(sockPath) > 107) {
    throw new StackError(
      `state dir path too long for unix sockets (${sockPath}); set a shorter KEEL_STACK_DIR`,
    )
  }
  const delayRaw = process.env.KEEL_STACK_APPLY_DELAY_MS
  const applyDelayMs = delayRaw == null || delayRaw === '' ? DEFAULT_APPLY_DELAY_MS : Number(delayRaw)
  if (!Number.isInteger(applyDelayMs) || applyDelayMs < 0) {
    throw new StackError(`KEEL_STACK_APPLY_DELAY_MS must be a non-negative integer (got ${delayRaw})`)
  }

  mkdirFor(STATE_DIR)
  fs.writeFileSync(
    paths.marker,
    'created by keel scripts/stack.mjs; `node scripts/stack.mjs down` deletes this dir\n',
  )
  mkdirFor(paths.sockDir, { pg: true })
  mkdirFor(paths.logDir, { pg: true })
  mkdirFor(paths.redisDir)

  const [p0, p1, p2, p3] = await allocatePorts(4)
  const st = {
    version: 1,
    complete: false,
    repoRoot: REPO_ROOT,
    binDir,
    redisServer: redis,
    applyDelayMs,
    ports: { primary: p0, replica1: p1, replica2: p2, redis: p3 },
    createdAt: new Date().toISOString(),
  }
  saveState(st)

  if (IS_ROOT) {
    const r = await run('test', ['-w', paths.logDir], { asPg: true, timeoutMs: 5000 })
    if (r.code !== 0) {
      throw new StackError(
        `the postgres OS user cannot reach ${STATE_DIR} (a parent directory is not traversable); ` +
          'set KEEL_STACK_DIR to a path under /tmp',
      )
    }
  }

  log(`ports: primary ${p0}, replica1 ${p1}, replica2 ${p2}, redis ${p3}; bin ${binDir}`)
  const redisUp = startRedis(st).then(() => log('redis up'))
  redisUp.catch(() => {}) // awaited (and its error reported) below
  await initPrimary(st)
  log('initdb done')
  await startPg(st, 'primary')
  log('primary up')
  await setupDatabase(st)
  log('database keel, roles keel_owner/keel_app created')
  await createSlots(st, REPLICAS)
  await Promise.all(REPLICAS.map((n) => createReplica(st, n)))
  log('base backups done')
  await Promise.all(REPLICAS.map((n) => startPg(st, n)))
  log('replicas accepting connections')
  await waitStreaming(st, REPLICAS, 60_000)
  log('replicas streaming')
  await redisUp

  st.complete = true
  saveState(st)
  const info = writeOutputs(st)
  summary(info, `up in ${((Date.now() - T0) / 1000).toFixed(1)}s`)
  return 0
}

async function cmdUpBouncer() {
  await acquireLock()
  const st = requireState()
  const started = await upBouncers(st)
  const info = writeOutputs(st)
  const lines = BOUNCERS.map(
    (n) => `  pgbouncer ${n.padEnd(10)} ${HOST}:${info.pgbouncer[n].port}  ${info.pgbouncer[n].url}`,
  )
  process.stdout.write(
    `pgbouncer ${started.length ? `started (${started.join(', ')})` : 'already up'}\n${lines.join('\n')}\n`,
  )
  return 0
}

async function cmdUpTopology(topology) {
  await acquireLock()
  const st = requireState()
  const taken = new Set([...RESERVED_PORTS, ...Object.values(st.ports).filter((p) => typeof p === 'number')])
  const started = await topologies.up(st, topology, taken)
  saveState(st)
  const info = writeOutputs(st)
  const entry = topology === 'redis-cluster' ? info.redisCluster : info.redisSentinel
  process.stdout.write(
    `${topology} ${started.length ? `started (${started.join(', ')})` : 'already up'}\n${JSON.stringify(entry, null, 2)}\n`,
  )
  return 0
}

/** stop / kill / start of one node of a Redis topology. */
async function cmdTopologyNode(command, name) {
  await acquireLock()
  const st = requireState()
  let did
  if (command === 'start') did = await topologies.startNode(st, name)
  else did = await topologies.stopNode(st, name, command === 'kill' ? 'SIGKILL' : 'SIGTERM')
  const verb = { start: 'started', stop: 'stopped', kill: 'killed (SIGKILL)' }[command]
  process.stdout.write(`${name} ${did ? verb : `was already ${command === 'start' ? 'running' : 'down'}`}\n`)
  return 0
}

/** up spare: a fresh standby of the primary (own slot and port), streaming before this returns. */
async function cmdUpSpare() {
  await acquireLock()
  const st = requireState()
  if (!st.ports[SPARE]) {
    const taken = new Set([
      ...RESERVED_PORTS,
      ...Object.values(st.ports).filter((p) => typeof p === 'number'),
    ])
    let port
    do [port] = await allocatePorts(1)
    while (taken.has(port))
    st.ports[SPARE] = port
    saveState(st)
  }
  let started = false
  if (!postmasterPid(SPARE)) {
    await createSlots(st, [SPARE])
    await createReplica(st, SPARE)
    started = await startPg(st, SPARE)
    await waitStreaming(st, [SPARE], 60_000)
  }
  const info = writeOutputs(st)
  process.stdout.write(
    `spare ${started ? 'started' : 'already up'} on port ${info.spare.port}  ${info.spare.url}\n`,
  )
  return 0
}

/** promote spare: pg_ctl promote (a new timeline); waits until it accepts writes. */
async function cmdPromote(name) {
  if (name !== SPARE) throw new StackError('only the spare standby is promoted (`up spare` first)')
  await acquireLock()
  const st = requireState()
  if (!postmasterPid(SPARE)) throw new StackError('spare is not running (`up spare` first)')
  const r = await run(pgBin(st, 'pg_ctl'), ['-D', paths.dataDir(SPARE), '-w', '-t', '60', '-s', 'promote'], {
    asPg: true,
    timeoutMs: 75_000,
  })
  if (r.code !== 0) throw new StackError(describeFailure('pg_ctl promote (spare)', r))
  const timeline = (
    await psql(
      st,
      st.ports[SPARE],
      "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int;",
    )
  ).trim()
  process.stdout.write(`spare promoted on port ${st.ports[SPARE]} (timeline ${timeline})\n`)
  return 0
}

/** down spare: stops it, deletes its data dir and drops its slot on the primary (if it is up). */
async function cmdDownSpare() {
  await acquireLock()
  const st = requireState()
  const stopped = await stopPg(st, SPARE)
  fs.rmSync(paths.dataDir(SPARE), { recursive: true, force: true })
  if (postmasterPid('primary')) {
    await psql(
      st,
      st.ports.primary,
      `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '${SPARE}' and not active;`,
    ).catch((e) => log(`warning: could not drop slot ${SPARE}: ${e.message}`))
  }
  delete st.ports[SPARE]
  saveState(st)
  writeOutputs(st)
  process.stdout.write(`spare ${stopped ? 'stopped and removed' : 'removed (was not running)'}\n`)
  return 0
}

async function cmdDown() {
  await acquireLock()
  await teardown()
  removeOutputs()
  process.stdout.write('keel stack down\n')
  return 0
}

async function componentStatus(st, name, rows) {
  if (name === 'redis') {
    const pid = redisPid()
    const up = Boolean(pid) && (await redisPing(st.ports.redis))
    return { status: up ? 'up' : 'down', port: st.ports.redis, pid }
  }
  const pid = postmasterPid(name)
  const up = Boolean(pid) && (await pgReady(st, name))
  const res = { status: up ? 'up' : 'down', port: st.ports[name], pid }
  if (name !== 'primary') {
    res.applyDelayMs = applyDelay(st, name)
    res.streaming = rows ? rows.some((r) => r.name === name && r.state === 'streaming') : null
  }
  return res
}

async function cmdStatus() {
  const st = loadState()
  if (!st?.complete) {
    const components = Object.fromEntries(COMPONENTS.map((n) => [n, { status: 'down' }]))
    process.stdout.write(
      `${JSON.stringify({ up: false, stateDir: STATE_DIR, components, note: 'stack not created; run: node scripts/stack.mjs up' }, null, 2)}\n`,
    )
    return 1
  }
  let rows = null
  if (postmasterPid('primary')) rows = await replicationRows(st).catch(() => null)
  const entries = await Promise.all(COMPONENTS.map(async (n) => [n, await componentStatus(st, n, rows)]))
  const components = Object.fromEntries(entries)
  const up = entries.every(([, c]) => c.status === 'up')
  process.stdout.write(`${JSON.stringify({ up, stateDir: STATE_DIR, components }, null, 2)}\n`)
  return up ? 0 : 1
}

function checkName(name) {
  if (!COMPONENTS.includes(name) && !ON_DEMAND.includes(name)) {
    throw new StackError(
      `unknown component ${JSON.stringify(name)}; expected one of: ${[...COMPONENTS, ...ON_DEMAND].join(', ')}`,
    )
  }
}

/** Stops or kills both PgBouncers; true when one was running. */
async function downBouncers(sig) {
  let did = false
  for (const n of BOUNCERS) if (await stopBouncer(n, sig)) did = true
  writeOutputs(requireState())
  return did
}

async function cmdStop(name) {
  checkName(name)
  await acquireLock()
  const st = requireState()
  let did
  if (name === 'pgbouncer') did = await downBouncers('SIGTERM')
  else did = name === 'redis' ? await stopRedis(st) : await stopPg(st, name)
  process.stdout.write(`${name} ${did ? 'stopped' : 'was already stopped'}\n`)
  return 0
}

async function cmdKill(name) {
  checkName(name)
  await acquireLock()
  requireState()
  let did
  if (name === 'pgbouncer') did = await downBouncers('SIGKILL')
  else did = name === 'redis' ? await killRedis() : await killPg(name)
  process.stdout.write(`${name} ${did ? 'killed (SIGKILL)' : 'was not running'}\n`)
  return 0
}

function cmdFreeze(name, how) {
  checkName(name)
  if (name === 'redis') throw new StackError('pause/resume is for Postgres components')
  requireState()
  const n = freezePg(name, how)
  process.stdout.write(`${name} ${how === 'SIGSTOP' ? 'paused' : 'resumed'} (${n} processes)\n`)
  return 0
}

async function cmdStart(name) {
  checkName(name)
  await acquireLock()
  const st = requireState()
  let did
  if (name === 'pgbouncer') {
    did = (await upBouncers(st)).length > 0
    writeOutputs(st)
  } else if (name === 'redis') {
    did = await startRedis(st)
  } else {
    did = await startPg(st, name)
    // Wait for replication to (re)establish so tests can rely on it.
    const primaryUp = Boolean(postmasterPid('primary')) && (await pgReady(st, 'primary'))
    const want = name === 'primary' ? REPLICAS.filter((n) => postmasterPid(n)) : [name]
    if (primaryUp) await waitStreaming(st, want, 30_000)
    else if (name !== 'primary') log(`warning: primary is down, so ${name} cannot stream until it is started`)
  }
  const port = name === 'pgbouncer' ? Object.values(st.ports.pgbouncer).join(', ') : st.ports[name]
  process.stdout.write(`${name} ${did ? 'started' : 'was already running'} on port ${port}\n`)
  return 0
}

function cmdEnv() {
  try {
    process.stdout.write(fs.readFileSync(STACK_ENV, 'utf8'))
    return 0
  } catch {
    throw new StackError(`${STACK_ENV} not found; run: node scripts/stack.mjs up`)
  }
}

const USAGE = `usage: node scripts/stack.mjs <command> [name]

commands:
  up                 create/start the stack (idempotent), write .keel/stack.json and .keel/stack.env
  up pgbouncer       (stack up first) start two PgBouncers in transaction mode in front of the primary,
                     \`plain\` and \`discardAll\` (server_reset_query_always); adds \`pgbouncer\` to stack.json
  down               stop everything and delete the state dir and .keel/stack.{json,env}
  status             print JSON status of every component; exit 0 if all are up
  env                print .keel/stack.env (eval "$(node scripts/stack.mjs env)")
  stop  <name>       graceful stop (pg_ctl stop -m fast / redis SHUTDOWN NOSAVE)
  start <name>       start again on the same port; waits until ready (and streaming, for replicas)
  kill  <name>       SIGKILL the process(es): simulates a crash
  pause <name>       SIGSTOP the postmaster and its backends: a host that stops answering
  resume <name>      SIGCONT them again (always resume what you paused)

names: ${COMPONENTS.join(', ')}, ${ON_DEMAND.join(', ')} (both PgBouncers)
  up redis-cluster   (stack up first) a Redis Cluster, 3 masters + 3 replicas (redis-cluster-0..5, ports
                     below 55536); adds \`redisCluster\` to stack.json
  up redis-sentinel  (stack up first) a master and a replica (redis-sentinel-0..1) and 3 Sentinels
                     (redis-sentinel-s0..s2), master name keelmaster; adds \`redisSentinel\` to stack.json
  stop|start|kill redis-cluster-N | redis-sentinel-N | redis-sentinel-sN   one node of a topology
  up spare           (stack up first) a third standby of the primary on its own port; adds \`spare\` to
                     stack.json. \`promote spare\` promotes it (new timeline); \`down spare\` removes it
                     (the game day and the failover test use it; the shared primary is never promoted)
env:   KEEL_STACK_DIR (state dir), KEEL_STACK_APPLY_DELAY_MS (replica2 delay, default ${DEFAULT_APPLY_DELAY_MS}),
       KEEL_STACK_PG_BIN (Postgres bin dir override)
`

async function main(argv) {
  const [command, name, ...rest] = argv
  const needsName = ['stop', 'start', 'kill', 'pause', 'resume'].includes(command)
  if (command === 'up' && name !== undefined) {
    if (!ON_DEMAND.includes(name) || rest.length) {
      process.stderr.write(USAGE)
      return 2
    }
    if (name === SPARE) return cmdUpSpare()
    return name === 'pgbouncer' ? cmdUpBouncer() : cmdUpTopology(name)
  }
  if (command === 'down' && name === SPARE && !rest.length) return cmdDownSpare()
  if (command === 'promote') {
    if (!name || rest.length) {
      process.stderr.write(USAGE)
      return 2
    }
    return cmdPromote(name)
  }
  if (['stop', 'start', 'kill'].includes(command) && parseNodeName(name) && !rest.length) {
    return cmdTopologyNode(command, name)
  }
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE)
    return command ? 0 : 2
  }
  if ((needsName && (!name || rest.length)) || (!needsName && name)) {
    process.stderr.write(USAGE)
    return 2
  }
  switch (command) {
    case 'up':
      return cmdUp()
    case 'down':
      return cmdDown()
    case 'status':
      return cmdStatus()
    case 'env':
      return cmdEnv()
    case 'stop':
      return cmdStop(name)
    case 'start':
      return cmdStart(name)
    case 'kill':
      return cmdKill(name)
    case 'pause':
      return cmdFreeze(name, 'SIGSTOP')
    case 'resume':
      return cmdFreeze(name, 'SIGCONT')
    default:
      process.stderr.write(`unknown command ${JSON.stringify(command)}\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof StackError) process.stderr.write(`stack: error: ${err.message}\n`)
    else process.stderr.write(`stack: unexpected error: ${err?.stack || err}\n`)
    process.exit(1)
  },
)
