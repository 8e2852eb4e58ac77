import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { readiness } from '../src/http/readiness.js'
import { createKeel, isKeelError, type Keel, type KeelConfig } from '../src/index.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { readStack, stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// The shared stack's primary killed (SIGKILL) or stopped (SIGSTOP) under a mixed load, then brought
// back (ADR 0043). Files run one at a time (vitest.config.ts), and every test gives the primary back
// in afterEach, so the suites after this one find the stack whole.

const table = 'primary_down_items'
const HELD_MS = 10_000
let keel: Keel | undefined
let primary: 'killed' | 'paused' | undefined

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
})
afterEach(async () => {
  if (primary === 'paused') await stackCtl('resume', 'primary')
  if (primary === 'killed') await stackCtl('start', 'primary')
  primary = undefined
  await keel?.close()
  keel = undefined
})
afterAll(async () => {
  await dropTable(table)
})

type Postgres = KeelConfig['postgres']

function primaryDownKeel(postgres: Partial<Postgres> = {}, limits: KeelConfig['limits'] = {}): Keel {
  const stack = readStack()
  const k = createKeel({
    postgres: {
      primary: { connectionString: stack.primary.url },
      replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
      replicaPollMs: 100,
      // Below the outage's length: with commit timestamps as the measure, every replica would age out
      // of rotation while the primary is down (nothing new to replay) and reads would go nowhere.
      maxReplicaLagMs: 3_000,
      pool: { max: 4 },
      ...postgres,
    },
    limits,
  })
  keel = k
  return k
}

async function killPrimary(): Promise<void> {
  primary = 'killed'
  await stackCtl('kill', 'primary')
}

/** Until the replica monitor has found the primary down (calls needing it are refused without trying). */
async function degraded(k: Keel): Promise<void> {
  await waitFor('health says degraded', async () => (await k.health()).degraded !== undefined, 15_000)
  await waitFor(
    'calls needing the primary are refused at once',
    () =>
      k
        .tenant('probe')
        .query('SELECT 1', [], { consistency: 'strong' })
        .then(
          () => false,
          (error: unknown) => codeOf(error) === 'KEEL_DB_UNAVAILABLE/primary_down',
        ),
    15_000,
  )
}

function codeOf(error: unknown): string {
  if (!isKeelError(error)) return `raw: ${String(error)}`
  return error.details.reason === 'primary_down' ? `${error.code}/primary_down` : error.code
}

/** N inserts (tenants p0 and p1) started at once; each outcome is recorded as it settles. */
function startWrites(
  k: Keel,
  n: number,
  suffix: () => string = () => '',
): { outcomes: Array<string | undefined>; writes: Array<Promise<void>> } {
  const outcomes: Array<string | undefined> = Array.from({ length: n }, () => undefined)
  const writes = Array.from({ length: n }, (_, i) =>
    k
      .tenant(`p${i % 2}`)
      .query(`INSERT INTO ${table} (tenant_id) VALUES ($1)`, [`p${i % 2}`])
      .then(
        () => {
          outcomes[i] = `ok${suffix()}`
        },
        (error: unknown) => {
          outcomes[i] = `${codeOf(error)}${suffix()}`
        },
      ),
  )
  return { outcomes, writes }
}

/** Until a write through `db` succeeds again (the primary back, its pools open). */
async function writesAgain(db: ReturnType<Keel['tenant']>): Promise<void> {
  await waitFor('a write succeeds again', async () => {
    try {
      await db.query(`INSERT INTO ${table} (tenant_id) VALUES ('p0')`)
      return true
    } catch {
      return false
    }
  })
}

/** A token whose position no replica has replayed (and the dead primary cannot be asked about). */
function futureToken(k: Keel, written: string): string {
  const [, systemId, timeline] = written.split('.')
  void k
  return `k1.${systemId}.${timeline}.ffffffffff`
}

describe('the primary killed under a mixed load', () => {
  it('reads that need no read-your-writes carry on with 0 failures; writes and read-your-writes reads fail fast with KEEL_DB_UNAVAILABLE (primary_down); readiness says degraded; all recover once it is back', async () => {
    const k = primaryDownKeel()
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
    const writer = k.tenant('w0')
    await writer.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, 'before')`, ['w0'])
    const token = writer.consistencyToken!
    expect(token).toMatch(/^k1\./)

    let stop = false
    const reads = { ok: 0, failed: [] as string[] }
    const writes = { ok: 0, failed: [] as string[] }
    const readLoops = Array.from({ length: 4 }, async (_, i) => {
      while (!stop) {
        try {
          // A fresh session (no position) and an eventual read: neither needs the primary.
          const db = k.tenant(`r${i}`)
          await db.query(`SELECT count(*) FROM ${table}`, [], i % 2 === 0 ? {} : { consistency: 'eventual' })
          reads.ok++
        } catch (error) {
          reads.failed.push(codeOf(error))
        }
        await new Promise((r) => setTimeout(r, 5))
      }
    })
    const writeLoops = Array.from({ length: 2 }, async (_, i) => {
      const db = k.tenant(`w${i}`)
      while (!stop) {
        try {
          await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, 'x')`, [db.tenantId])
          writes.ok++
        } catch (error) {
          writes.failed.push(codeOf(error))
          await new Promise((r) => setTimeout(r, 20))
        }
      }
    })
    await new Promise((r) => setTimeout(r, 300))
    await killPrimary()
    await degraded(k)
    const failedBeforeDetection = writes.failed.length
    // Held down past maxReplicaLagMs: the replicas must stay in rotation all along.
    await new Promise((r) => setTimeout(r, 4_000))
    const health = await k.health()
    const ready = await readiness(k, false)
    // Each call that needs the primary now fails at once with the documented code.
    const ryw = await Promise.allSettled([
      k.tenant('w0', { consistencyToken: futureToken(k, token) }).query(`SELECT count(*) FROM ${table}`),
      k.tenant('w0', { consistencyToken: 'not a token' }).query(`SELECT count(*) FROM ${table}`),
      k.tenant('w0').query(`SELECT count(*) FROM ${table}`, [], { consistency: 'strong' }),
      k.tenant('w0').transaction((tx) => tx.query('SELECT 1')),
    ])
    // A session whose writes a replica already replayed still reads them there.
    const replayed = await k
      .tenant('w0', { consistencyToken: token })
      .query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table} WHERE body = 'before'`)
    const downWrites = writes.failed.slice(failedBeforeDetection)

    primary = undefined
    await stackCtl('start', 'primary')
    await waitFor('a write succeeds again', async () => {
      try {
        await k.tenant('w9').query(`INSERT INTO ${table} (tenant_id) VALUES ('w9')`)
        return true
      } catch {
        return false
      }
    })
    const writesBack = writes.ok
    await waitFor('the write load succeeds again', () => writes.ok > writesBack + 5)
    stop = true
    await Promise.all([...readLoops, ...writeLoops])

    expect(reads.failed).toEqual([])
    // Before the monitor noticed, a write on a connection the kill cut is a KeelError too.
    expect(writes.failed.filter((c) => c.startsWith('raw'))).toEqual([])
    expect(reads.ok).toBeGreaterThan(50)
    expect(downWrites.length).toBeGreaterThan(0)
    expect(new Set(downWrites)).toEqual(new Set(['KEEL_DB_UNAVAILABLE/primary_down']))
    expect(ryw.map((r) => (r.status === 'rejected' ? codeOf(r.reason) : 'ok'))).toEqual([
      'KEEL_DB_UNAVAILABLE/primary_down',
      'KEEL_DB_UNAVAILABLE/primary_down',
      'KEEL_DB_UNAVAILABLE/primary_down',
      'KEEL_DB_UNAVAILABLE/primary_down',
    ])
    expect(replayed.rows[0]?.n).toBe('1')
    expect(replayed.possiblyStale).toBeUndefined()
    expect(health.primary.status).toBe('down')
    expect(health.degraded).toMatchObject({ reason: 'primary_down' })
    expect(health.replicas.every((r) => r.inRotation)).toBe(true)
    expect(ready).toMatchObject({ status: 200, body: { status: 'degraded', reason: 'primary_down' } })
    const after = await k.health()
    expect(after.degraded).toBeUndefined()
    expect((await readiness(k, false)).body.status).toBe('ready')
  })

  it('opt-in: a read-your-writes read is served by the freshest replica and flagged possiblyStale, per call or per config; the default stays strict', async () => {
    const k = primaryDownKeel()
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
    const writer = k.tenant('s0')
    await writer.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('s0', 'stale-check')`)
    const stack = readStack()
    const token = futureToken(k, writer.consistencyToken!)
    const perConfig = createKeel({
      postgres: {
        primary: { connectionString: stack.primary.url },
        replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
        replicaPollMs: 100,
        maxReplicaLagMs: 60_000,
        pool: { max: 2 },
        whenPrimaryDown: 'serve-stale',
      },
    })
    try {
      await waitFor('replicas in rotation', async () =>
        (await perConfig.health()).replicas.every((r) => r.inRotation),
      )
      await killPrimary()
      await degraded(k)
      await degraded(perConfig)
      const sql = `SELECT count(*)::text AS n, inet_server_port() AS port FROM ${table} WHERE tenant_id = 's0'`
      const strict = k.tenant('s0', { consistencyToken: token }).query(sql)
      await expect(strict).rejects.toMatchObject({
        code: 'KEEL_DB_UNAVAILABLE',
        details: { reason: 'primary_down' },
      })
      const perCall = await k
        .tenant('s0', { consistencyToken: token })
        .query<{ n: string; port: number }>(sql, [], { whenPrimaryDown: 'serve-stale' })
      const fromConfig = await perConfig
        .tenant('s0', { consistencyToken: token })
        .query<{ n: string; port: number }>(sql)
      // Opted in per config, a call can still ask for the strict answer.
      const strictPerCall = perConfig
        .tenant('s0', { consistencyToken: token })
        .query(sql, [], { whenPrimaryDown: 'fail' })
      await expect(strictPerCall).rejects.toMatchObject({ code: 'KEEL_DB_UNAVAILABLE' })
      // Writes are never served stale.
      await expect(
        perConfig.tenant('s0').query(`INSERT INTO ${table} (tenant_id) VALUES ('s0')`),
      ).rejects.toMatchObject({ code: 'KEEL_DB_UNAVAILABLE' })
      await expect(
        k.tenant('s0').query(sql, [], { whenPrimaryDown: 'sometimes' as never }),
      ).rejects.toMatchObject({ code: 'KEEL_QUERY_INVALID' })

      // The freshest replica: replica1 (replica2 replays 1.5 s late, and has caught up by now or not).
      const replicaPorts = stack.replicas.map((r) => r.port)
      for (const r of [perCall, fromConfig]) {
        expect(r.possiblyStale).toBe(true)
        expect(replicaPorts).toContain(r.rows[0]?.port)
        expect(r.rows[0]?.n).toBe('1')
      }
    } finally {
      await perConfig.close()
    }
  })
})

describe('the primary stops answering (SIGSTOP) under a write load', () => {
  it('writes queued for a connection fail as soon as the probe finds it down, not after connectionTimeoutMs or acquireTimeoutMs; writes in flight end at their deadline; nothing waits on the pool afterwards', async () => {
    // Deliberate bounds: a statement in flight ends at statementTimeoutMs + timeoutGraceMs (2 s); a
    // call waiting for a connection would wait 30 s (connectionTimeoutMs, acquireTimeoutMs), far past
    // HELD_MS, unless the primary-down probe (at most max(1 s, 4 x replicaPollMs)) fails it.
    const k = primaryDownKeel(
      { pool: { max: 4, connectionTimeoutMs: 30_000 }, timeoutGraceMs: 1_000 },
      { acquireTimeoutMs: 30_000, statementTimeoutMs: 1_000, tenantConnections: 4 },
    )
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
    const db = k.tenant('p0')
    await Promise.all(
      Array.from({ length: 4 }, () => db.query('SELECT pg_sleep(0.05)', [], { route: 'primary' })),
    )
    primary = 'paused'
    await stackCtl('pause', 'primary')
    let resumed = false
    const N = 20
    const { outcomes, writes } = startWrites(k, N, () => (resumed ? ' after resume' : ''))
    let readFailures = 0
    let readsOk = 0
    const readsDuring = (async () => {
      const deadline = Date.now() + 3_000
      while (Date.now() < deadline) {
        await k
          .tenant('reader')
          .query(`SELECT count(*) FROM ${table}`)
          .then(
            () => readsOk++,
            () => readFailures++,
          )
      }
    })()
    await Promise.race([Promise.all(writes), new Promise((r) => setTimeout(r, HELD_MS))])
    await readsDuring
    const before = [...outcomes]
    const health = await k.health()
    const waiting = Object.values(health.tenants.primary ?? {}).reduce((n, t) => n + t.waiting, 0)
    await stackCtl('resume', 'primary')
    primary = undefined
    resumed = true
    await Promise.all(writes)

    expect(before.filter((o) => o === undefined)).toEqual([])
    const inFlight = before.filter((o) => o === 'KEEL_QUERY_TIMEOUT').length
    const refused = before.filter((o) => o === 'KEEL_DB_UNAVAILABLE/primary_down').length
    expect(inFlight + refused).toBe(N)
    expect(inFlight).toBeLessThanOrEqual(4)
    expect(refused).toBeGreaterThanOrEqual(N - 4)
    expect(waiting).toBe(0)
    expect(health.degraded).toMatchObject({ reason: 'primary_down' })
    expect(readFailures).toBe(0)
    expect(readsOk).toBeGreaterThan(0)
    // pg-pool's own queue empties once its connection attempts give up or succeed; none is left behind.
    await writesAgain(db)
    expect((await k.health()).primary.pool.waiting).toBe(0)
  })
})

describe('database mode: a tenant database whose primary stops answering (SIGSTOP)', () => {
  it('calls queued for a permit of the server budget fail at detection; health and readiness say degraded without probing the stopped host', async () => {
    const stack = readStack()
    const k = createKeel({
      postgres: {
        replicaPollMs: 100,
        maxReplicaLagMs: 3_000,
        pool: { max: 4, connectionTimeoutMs: 30_000 },
        timeoutGraceMs: 1_000,
      },
      tenancy: {
        mode: 'database',
        // The replica monitor's probe holds one of the 3: at most 2 for the pool, so most writes queue
        // for a permit of the server's budget (ADR 0033), not for the tenant limiter or pg-pool.
        maxConnections: 3,
        resolve: () => ({
          primary: { connectionString: stack.primary.url },
          replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
          isolation: 'rls',
        }),
      },
      limits: { acquireTimeoutMs: 30_000, statementTimeoutMs: 1_000, tenantConnections: 4 },
    })
    keel = k
    const db = k.tenant('p0')
    await db.query('SELECT 1')
    await waitFor('replicas in rotation', async () =>
      ((await k.health()).databases ?? []).every((d) => d.replicas.every((r) => r.inRotation)),
    )
    primary = 'paused'
    await stackCtl('pause', 'primary')
    const N = 12
    const { outcomes, writes } = startWrites(k, N)
    await Promise.race([Promise.all(writes), new Promise((r) => setTimeout(r, HELD_MS))])
    const before = [...outcomes]
    // Bounded well below connectionTimeoutMs: a health check that probed the stopped host would hang.
    const health = await Promise.race([
      k.health(),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
    ])
    const ready = await Promise.race([
      readiness(k, false),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
    ])
    await stackCtl('resume', 'primary')
    primary = undefined
    await Promise.all(writes)

    // Without failing the budget's queue at detection, those calls would still wait (30 s).
    expect(before.filter((o) => o === undefined)).toEqual([])
    const inFlight = before.filter((o) => o === 'KEEL_QUERY_TIMEOUT').length
    expect(inFlight).toBeLessThanOrEqual(2)
    expect(before.filter((o) => o === 'KEEL_DB_UNAVAILABLE/primary_down').length).toBe(N - inFlight)
    expect(health?.degraded).toMatchObject({ reason: 'primary_down' })
    expect(health?.databases?.[0]?.primary).toMatchObject({ status: 'down' })
    expect(ready).toMatchObject({ status: 200, body: { status: 'degraded', reason: 'primary_down' } })
    await writesAgain(db)
    expect((await k.health()).degraded).toBeUndefined()
  })
})
