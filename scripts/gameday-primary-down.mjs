#!/usr/bin/env node
// Game day "Postgres primary down" (docs/runbooks/postgres-primary-down.md, ADR 0043), rehearsed on the
// local stack: a mixed load through keel, the primary SIGKILLed, what keel reports, a standby promoted
// and the primary address repointed at it, keel's recovery without a restart, then a summary of what
// failed in each phase.
//
//   node scripts/stack.mjs up                       # the local stack
//   pnpm --filter @keel/core run build              # the script runs the built package
//   node scripts/gameday-primary-down.mjs [--serve-stale] [--down-ms 5000]
//
// The app's primary URL is a fixed address (here a TCP proxy in this process; in production a DNS
// name, a virtual IP or a PgBouncer) that the operator repoints at the promoted server. The standby
// promoted is the stack's on-demand `spare`; at the end it is removed and the old primary restarted,
// so the stack is as it was (the old primary's timeline goes on, the rehearsal's later writes vanish
// with the spare).

import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { readiness } from '../packages/core/dist/http.js'
import { applyRlsPolicy, createKeel, isKeelError } from '../packages/core/dist/index.js'
import { readStack } from './stack/client.mjs'
import { startTcpProxy } from './stack/tcp-proxy.mjs'

const execFileAsync = promisify(execFile)
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
// pg is @keel/core's dependency, not the repository root's.
const pg = createRequire(path.join(ROOT, 'packages', 'core', 'package.json'))('pg')
const args = process.argv.slice(2)
const serveStale = args.includes('--serve-stale')
const downAt = args.indexOf('--down-ms')
const DOWN_MS = downAt >= 0 ? Number(args[downAt + 1]) : 5_000
const TABLE = 'gameday_items'
const T0 = Date.now()

const say = (line) => process.stdout.write(`[gameday +${((Date.now() - T0) / 1000).toFixed(1)}s] ${line}\n`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Runs a stack.mjs command without blocking the event loop: the load keeps running meanwhile. */
async function stack(...argv) {
  say(`$ node scripts/stack.mjs ${argv.join(' ')}`)
  const { stdout } = await execFileAsync(
    process.execPath,
    [path.join(ROOT, 'scripts', 'stack.mjs'), ...argv],
    {
      cwd: ROOT,
      encoding: 'utf8',
    },
  ).catch((error) => {
    throw new Error(`stack.mjs ${argv.join(' ')} failed:\n${error.stderr ?? error.message}`)
  })
  for (const line of stdout.trim().split('\n')) if (line) say(`  ${line}`)
}

async function sql(url, text) {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text)).rows
  } finally {
    await client.end()
  }
}

// keel's log lines carrying a `signal` are what an on-call engineer's alerts match on.
const logger = {
  debug() {},
  info: (obj, msg) => obj?.signal && say(`keel log info  ${msg} ${JSON.stringify(obj)}`),
  warn: (obj, msg) => obj?.signal && say(`keel log warn  ${msg} ${JSON.stringify(obj)}`),
  error: (obj, msg) => obj?.signal && say(`keel log error ${msg} ${JSON.stringify(obj)}`),
}

function codeOf(error) {
  if (!isKeelError(error)) return `non-KeelError: ${error?.code ?? error?.message ?? error}`
  return error.details?.reason === 'primary_down' ? `${error.code} (primary_down)` : error.code
}

const phases = []
let phase
function enter(name) {
  phase = { name, started: Date.now(), reads: newCount(), rywReads: newCount(), writes: newCount() }
  phases.push(phase)
  say(`=== phase: ${name}`)
}
function newCount() {
  return { ok: 0, stale: 0, failed: {} }
}
function fail(count, error) {
  const code = codeOf(error)
  count.failed[code] = (count.failed[code] ?? 0) + 1
}

async function report(keel, what) {
  const health = await keel.health()
  const ready = await readiness(keel, false)
  say(
    `${what}: keel.health() primary ${health.primary.status}${health.primary.error ? ` (${health.primary.error})` : ''}`,
  )
  for (const r of health.replicas)
    say(
      `  replica ${r.name}: ${r.status}, inRotation ${r.inRotation}, lagMs ${r.lagMs}${r.error ? `, ${r.error}` : ''}`,
    )
  if (health.degraded) say(`  degraded: ${JSON.stringify(health.degraded)}`)
  say(
    `  readiness: HTTP ${ready.status} ${JSON.stringify({ status: ready.body.status, reason: ready.body.reason })}`,
  )
}

async function main() {
  const st = await readStack()
  await stack('down', 'spare')
  // A tenant table under RLS, as keel's docs set one up (the spare's base backup then has it).
  const owner = new pg.Client({ connectionString: st.primary.ownerUrl })
  await owner.connect()
  try {
    await owner.query(`DROP TABLE IF EXISTS ${TABLE}`)
    await owner.query(
      `CREATE TABLE ${TABLE} (tenant_id text NOT NULL, id bigserial, body text NOT NULL DEFAULT '', PRIMARY KEY (tenant_id, id))`,
    )
    await applyRlsPolicy(owner, { table: TABLE })
  } finally {
    await owner.end()
  }
  await stack('up', 'spare')
  const spare = (await readStack()).spare
  const proxy = await startTcpProxy(st.primary.port)
  say(
    `the app's primary address: 127.0.0.1:${proxy.port} (a TCP proxy, leads to the primary on ${st.primary.port})`,
  )
  const keel = createKeel({
    logger,
    postgres: {
      primary: { connectionString: proxy.url() },
      replicas: st.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
      replicaPollMs: 100,
      whenPrimaryDown: serveStale ? 'serve-stale' : 'fail',
      pool: { max: 8 },
    },
    limits: { statementTimeoutMs: 2_000 },
  })
  let stop = false
  const loops = []
  try {
    for (let i = 0; i < 200 && !(await keel.health()).replicas.every((r) => r.inRotation); i++)
      await sleep(50)
    enter('steady')
    // Reads that need no read-your-writes: a fresh session per request.
    for (let i = 0; i < 4; i++)
      loops.push(
        (async () => {
          while (!stop) {
            const p = phase
            await keel
              .tenant(`reader${i}`)
              .query(`SELECT count(*) FROM ${TABLE}`)
              .then(
                () => p.reads.ok++,
                (e) => fail(p.reads, e),
              )
            await sleep(10)
          }
        })(),
      )
    // A user who writes, then reads the page showing the write (read-your-writes).
    for (let i = 0; i < 2; i++)
      loops.push(
        (async () => {
          let token
          while (!stop) {
            const p = phase
            const db = keel.tenant(`writer${i}`, { consistencyToken: token })
            try {
              await db.query(`INSERT INTO ${TABLE} (tenant_id, body) VALUES ($1, 'x')`, [db.tenantId])
              p.writes.ok++
              token = db.consistencyToken
            } catch (e) {
              fail(p.writes, e)
            }
            const next = keel.tenant(`writer${i}`, { consistencyToken: token })
            try {
              const r = await next.query(`SELECT count(*) FROM ${TABLE} WHERE tenant_id = $1`, [db.tenantId])
              if (r.possiblyStale) p.rywReads.stale++
              else p.rywReads.ok++
            } catch (e) {
              fail(p.rywReads, e)
            }
            await sleep(20)
          }
        })(),
      )
    await sleep(3_000)
    await report(keel, 'steady')

    await stack('kill', 'primary')
    enter('primary down (SIGKILLed), until the repoint')
    // What an on-call engineer sees: the primary_down log line, health degraded, readiness 200 degraded.
    for (let i = 0; i < 100 && (await keel.health()).degraded === undefined; i++) await sleep(50)
    await sleep(DOWN_MS)
    await report(keel, 'primary down')

    await stack('promote', 'spare')
    await proxy.point(spare.port)
    enter('standby promoted, primary address repointed')
    say(`the primary address now leads to the promoted standby on ${spare.port} (no keel restart)`)
    const repointed = Date.now()
    while (phase.writes.ok === 0 && Date.now() - repointed < 30_000) await sleep(20)
    say(`first write acknowledged ${Date.now() - repointed} ms after the repoint`)
    await sleep(3_000)
    await report(keel, 'after the promotion')
    say(
      'the replicas still follow the dead primary (old timeline): out of rotation until repointed or rebuilt',
    )
  } finally {
    stop = true
    await Promise.all(loops)
    await keel.close()
    await proxy.close()
    say('=== cleaning up: the spare goes, the old primary comes back as the stack primary')
    await stack('down', 'spare')
    await stack('start', 'primary')
    await sql(st.primary.ownerUrl, `DROP TABLE IF EXISTS ${TABLE}`)
  }

  say('=== summary (per phase: ok / failed by code)')
  const fmt = (c) =>
    `ok ${c.ok}${c.stale ? `, possiblyStale ${c.stale}` : ''}, failed ${
      Object.entries(c.failed)
        .map(([code, n]) => `${n} ${code}`)
        .join(', ') || 0
    }`
  for (const p of phases) {
    say(p.name)
    say(`  reads (no read-your-writes): ${fmt(p.reads)}`)
    say(`  read-your-writes reads:      ${fmt(p.rywReads)}`)
    say(`  writes:                      ${fmt(p.writes)}`)
  }
  const failedReads = phases.reduce((n, p) => n + Object.values(p.reads.failed).reduce((a, b) => a + b, 0), 0)
  say(
    failedReads === 0
      ? 'PASS: no read that needed no read-your-writes failed'
      : `FAIL: ${failedReads} such reads failed`,
  )
  return failedReads === 0 ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`gameday: ${error?.stack ?? error}\n`)
    process.exit(1)
  },
)
