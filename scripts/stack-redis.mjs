// Redis topologies for the local stack, started on demand (issue #17, ADR 0039):
//
//   redis-cluster    a Redis Cluster of 3 masters and 3 replicas (nodes redis-cluster-0 .. redis-cluster-5)
//   redis-sentinel   a master and a replica (redis-sentinel-0, redis-sentinel-1) watched by 3 Sentinels
//
// Imported by scripts/stack.mjs, which owns the state file and the command line. Node built-ins only.
// Every process is a daemonized redis-server with a pid file under <state>/redis-cluster or
// <state>/redis-sentinel; ports are below 55536 because a cluster node's bus listens on port + 10000.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'

const HOST = '127.0.0.1'
export const TOPOLOGIES = ['redis-cluster', 'redis-sentinel']
export const SENTINEL_MASTER_NAME = 'keelmaster'
const CLUSTER_NODES = 6
const SENTINEL_DATA = 2
const SENTINELS = 3
// Short timeouts so that a failover in a test takes seconds: a master is failed after 1 s unanswered.
const CLUSTER_NODE_TIMEOUT_MS = 1_000
const SENTINEL_DOWN_AFTER_MS = 1_000

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** `redis-cluster-3` -> { topology: 'redis-cluster', index: 3 }; sentinels themselves are `redis-sentinel-s0`. */
export function parseNodeName(name) {
  const m = /^(redis-cluster|redis-sentinel)-(s?)(\d)$/.exec(name ?? '')
  if (!m) return null
  const index = Number(m[3])
  if (m[1] === 'redis-cluster' && (m[2] || index >= CLUSTER_NODES)) return null
  if (m[1] === 'redis-sentinel' && index >= (m[2] ? SENTINELS : SENTINEL_DATA)) return null
  return { topology: m[1], index, sentinel: m[2] === 's' }
}

export function nodeNames() {
  return [
    ...Array.from({ length: CLUSTER_NODES }, (_, i) => `redis-cluster-${i}`),
    ...Array.from({ length: SENTINEL_DATA }, (_, i) => `redis-sentinel-${i}`),
    ...Array.from({ length: SENTINELS }, (_, i) => `redis-sentinel-s${i}`),
  ]
}

function isPortFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

/** `n` free ports in 20000..45535 whose port + 10000 (a cluster bus) is free as well. */
async function pickPorts(n, taken) {
  const ports = []
  for (let tries = 0; ports.length < n; tries++) {
    if (tries > 2_000) throw new Error('no free ports below 55536 on 127.0.0.1')
    const port = 20_000 + Math.floor(Math.random() * 25_536)
    if (taken.has(port) || taken.has(port + 10_000) || ports.includes(port)) continue
    if ((await isPortFree(port)) && (await isPortFree(port + 10_000))) ports.push(port)
  }
  return ports
}

/** One command through redis-cli; its reply text (redis-cli's plain output), or null when it failed. */
export function cli(port, ...args) {
  const r = spawnSync('redis-cli', ['-h', HOST, '-p', String(port), ...args], {
    encoding: 'utf8',
    timeout: 3_000,
  })
  return r.status === 0 ? r.stdout : null
}

const ping = async (port) => (cli(port, 'PING') ?? '').startsWith('PONG')

/** `SENTINEL MASTER`-style replies: alternating field and value lines, as an object. */
function fields(text) {
  const lines = (text ?? '').trim().split('\n')
  const out = {}
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i]] = lines[i + 1]
  return out
}

function isAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return e.code === 'EPERM'
  }
}

function readPid(file) {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim())
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return null
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return cmd.includes('redis') ? pid : null
  } catch {
    return null
  }
}

export function createRedisTopologies({ stateDir, redisServer, log, fail }) {
  const dirOf = (topology) => path.join(stateDir, topology)
  const fileOf = (name, ext) => {
    const node = parseNodeName(name)
    return path.join(dirOf(node.topology), `${name}.${ext}`)
  }
  const portOf = (st, name) => {
    const node = parseNodeName(name)
    if (node.topology === 'redis-cluster') return st.ports.redisCluster?.[node.index]
    return node.sentinel
      ? st.ports.redisSentinel?.sentinels[node.index]
      : st.ports.redisSentinel?.data[node.index]
  }
  const pidOf = (name) => readPid(fileOf(name, 'pid'))

  async function spawnServer(name, args) {
    const r = spawnSync(redisServer, args, { encoding: 'utf8', timeout: 15_000 })
    if (r.status !== 0) fail(`starting ${name} failed: ${r.stderr || r.stdout}\n${tailLog(name)}`)
  }

  function tailLog(name) {
    try {
      return fs.readFileSync(fileOf(name, 'log'), 'utf8').split('\n').slice(-20).join('\n')
    } catch {
      return ''
    }
  }

  function commonArgs(name, port) {
    return [
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
      fileOf(name, 'pid'),
      '--logfile',
      fileOf(name, 'log'),
      '--dir',
      dirOf(parseNodeName(name).topology),
    ]
  }

  /** Starts one node (a cluster node, a sentinel-watched data node, or a Sentinel); false when it ran. */
  async function startNode(st, name) {
    const port = portOf(st, name)
    if (port === undefined)
      fail(`${name}: its topology is not up; run: node scripts/stack.mjs up ${parseNodeName(name).topology}`)
    if (pidOf(name)) return false
    const node = parseNodeName(name)
    fs.mkdirSync(dirOf(node.topology), { recursive: true })
    if (node.topology === 'redis-cluster') {
      await spawnServer(name, [
        ...commonArgs(name, port),
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `${name}.nodes.conf`,
        '--cluster-node-timeout',
        String(CLUSTER_NODE_TIMEOUT_MS),
        // A replica takes over however long it was cut off: in a test the data is what it is.
        '--cluster-replica-validity-factor',
        '0',
        // The slots of a failed master fail; the others keep serving.
        '--cluster-require-full-coverage',
        'no',
      ])
    } else if (node.sentinel) {
      const conf = fileOf(name, 'conf')
      // Sentinel rewrites its config file as it learns: written once, kept across restarts.
      if (!fs.existsSync(conf)) {
        const master = st.ports.redisSentinel.data[0]
        fs.writeFileSync(
          conf,
          [
            `port ${port}`,
            `bind ${HOST}`,
            'daemonize yes',
            `pidfile ${fileOf(name, 'pid')}`,
            `logfile ${fileOf(name, 'log')}`,
            `dir ${dirOf(node.topology)}`,
            `sentinel monitor ${SENTINEL_MASTER_NAME} ${HOST} ${master} 2`,
            `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} ${SENTINEL_DOWN_AFTER_MS}`,
            `sentinel failover-timeout ${SENTINEL_MASTER_NAME} 5000`,
            `sentinel parallel-syncs ${SENTINEL_MASTER_NAME} 1`,
            '',
          ].join('\n'),
        )
      }
      await spawnServer(name, [conf, '--sentinel'])
    } else {
      const args = commonArgs(name, port)
      // The first start: node 1 replicates node 0. Afterwards Sentinel decides who replicates whom (a
      // restarted old master comes back as a master and Sentinel turns it into a replica).
      if (node.index === 1 && !st.redisSentinelStarted)
        args.push('--replicaof', HOST, String(st.ports.redisSentinel.data[0]))
      await spawnServer(name, args)
    }
    const ok = await waitFor(() => ping(port), 15_000)
    if (!ok) fail(`${name} did not answer PING on ${port} within 15s\n${tailLog(name)}`)
    return true
  }

  async function stopNode(st, name, sig = 'SIGTERM') {
    const pid = pidOf(name)
    if (!pid) return false
    if (sig === 'SIGTERM') cli(portOf(st, name), 'SHUTDOWN', 'NOSAVE')
    else process.kill(pid, sig)
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(50)
    if (isAlive(pid)) {
      process.kill(pid, 'SIGKILL')
      for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(50)
    }
    return true
  }

  async function clusterOk(st) {
    for (const port of st.ports.redisCluster) {
      if (!cli(port, 'CLUSTER', 'INFO')?.includes('cluster_state:ok')) return false
    }
    return true
  }

  async function upCluster(st, taken) {
    st.ports.redisCluster ??= await pickPorts(CLUSTER_NODES, taken)
    const names = st.ports.redisCluster.map((_, i) => `redis-cluster-${i}`)
    const started = []
    for (const name of names) if (await startNode(st, name)) started.push(name)
    if (!st.redisClusterCreated) {
      const nodes = st.ports.redisCluster.map((p) => `${HOST}:${p}`)
      const r = spawnSync(
        'redis-cli',
        ['--cluster', 'create', ...nodes, '--cluster-replicas', '1', '--cluster-yes'],
        { encoding: 'utf8', timeout: 60_000 },
      )
      if (r.status !== 0) fail(`redis-cli --cluster create failed: ${r.stderr || r.stdout}`)
      log(`redis cluster created on ${nodes.join(' ')}`)
      st.redisClusterCreated = true
    }
    if (!(await waitFor(() => clusterOk(st), 30_000)))
      fail('the Redis Cluster did not reach cluster_state:ok within 30s')
    return started
  }

  async function upSentinel(st, taken) {
    if (!st.ports.redisSentinel) {
      const [d0, d1, s0, s1, s2] = await pickPorts(SENTINEL_DATA + SENTINELS, taken)
      st.ports.redisSentinel = { data: [d0, d1], sentinels: [s0, s1, s2] }
    }
    const started = []
    for (let i = 0; i < SENTINEL_DATA; i++)
      if (await startNode(st, `redis-sentinel-${i}`)) started.push(`redis-sentinel-${i}`)
    st.redisSentinelStarted = true
    for (let i = 0; i < SENTINELS; i++)
      if (await startNode(st, `redis-sentinel-s${i}`)) started.push(`redis-sentinel-s${i}`)
    // Ready once every Sentinel knows the master and its replica, and the others Sentinels.
    const ready = await waitFor(async () => {
      for (const port of st.ports.redisSentinel.sentinels) {
        const master = fields(cli(port, 'SENTINEL', 'MASTER', SENTINEL_MASTER_NAME))
        if (master['num-slaves'] !== '1' || master['num-other-sentinels'] !== '2') return false
      }
      return true
    }, 30_000)
    if (!ready) fail('the Sentinels did not all see the master, its replica and each other within 30s')
    return started
  }

  return {
    /** Starts a topology (idempotent); the names of the processes it started. */
    async up(st, topology, taken) {
      return topology === 'redis-cluster' ? upCluster(st, taken) : upSentinel(st, taken)
    },
    startNode,
    stopNode,
    pidOf,
    async teardown(st) {
      const stopped = []
      for (const name of nodeNames()) {
        if (pidOf(name) && st.ports && (await stopNode(st, name, 'SIGKILL'))) stopped.push(name)
      }
      return stopped
    },
    /** The stack.json entries of the topologies that are up. */
    info(st) {
      const out = {}
      if (st.ports?.redisCluster && st.redisClusterCreated) {
        out.redisCluster = {
          nodes: st.ports.redisCluster.map((port, i) => ({
            name: `redis-cluster-${i}`,
            port,
            url: `redis://${HOST}:${port}`,
            pidFile: fileOf(`redis-cluster-${i}`, 'pid'),
          })),
          urls: st.ports.redisCluster.map((port) => `redis://${HOST}:${port}`),
          nodeTimeoutMs: CLUSTER_NODE_TIMEOUT_MS,
        }
      }
      if (st.ports?.redisSentinel && st.redisSentinelStarted) {
        out.redisSentinel = {
          name: SENTINEL_MASTER_NAME,
          sentinels: st.ports.redisSentinel.sentinels.map((port) => `redis://${HOST}:${port}`),
          nodes: st.ports.redisSentinel.data.map((port, i) => ({
            name: `redis-sentinel-${i}`,
            port,
            url: `redis://${HOST}:${port}`,
          })),
          downAfterMs: SENTINEL_DOWN_AFTER_MS,
        }
      }
      return out
    },
  }
}

async function waitFor(fn, timeoutMs, intervalMs = 100) {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await fn()) return true
    await sleep(intervalMs)
  }
  return false
}
