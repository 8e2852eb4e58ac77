import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterEach, describe, expect, it } from 'vitest'
import { isKeelError, type Keel } from '../src/index.js'
import { testKeel } from './support/keel.js'
import { readStack, stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// A host that stops answering without closing its sockets (SIGSTOP of the postmaster and every backend:
// a frozen VM, a stalled disk). TCP stays up, so only a client-side deadline can end a call.

let keel: Keel | undefined
const paused = new Set<'primary' | 'replica1'>()
const HELD_MS = 10_000

afterEach(async () => {
  // Never leave the stack stopped, whatever happened above.
  for (const name of paused) await stackCtl('resume', name)
  paused.clear()
  await keel?.close()
  keel = undefined
})

async function pause(name: 'primary' | 'replica1'): Promise<void> {
  paused.add(name)
  await stackCtl('pause', name)
}

async function resume(name: 'primary' | 'replica1'): Promise<void> {
  await stackCtl('resume', name)
  paused.delete(name)
}

interface Outcome {
  ok: boolean
  code: string | undefined
  port?: number
  afterResume: boolean
}

/** Records how each call settled, and whether that happened after the host was resumed. */
function track(calls: Array<Promise<{ rows: Array<{ port?: number }> }>>, resumed: () => boolean) {
  const outcomes: Array<Outcome | undefined> = calls.map(() => undefined)
  const all = Promise.all(
    calls.map((call, i) =>
      call.then(
        (r) => {
          outcomes[i] = { ok: true, code: undefined, port: r.rows[0]?.port, afterResume: resumed() }
        },
        (error: unknown) => {
          outcomes[i] = {
            ok: false,
            code: isKeelError(error) ? error.code : String(error),
            afterResume: resumed(),
          }
        },
      ),
    ),
  )
  return { outcomes, all }
}

/** Opens `n` connections to the host so the calls under test do not wait for a new one. */
async function warm(k: Keel, n: number, options: { consistency?: 'eventual' } = {}): Promise<void> {
  const db = k.tenant('warm')
  await Promise.all(Array.from({ length: n }, () => db.query('SELECT pg_sleep(0.05)', [], options)))
}

describe('a host that stops answering (SIGSTOP)', () => {
  it('calls on a stopped primary end on the client side with KEEL_QUERY_TIMEOUT / KEEL_ABORTED, never resolve later, and the pool works after SIGCONT', async () => {
    const k = testKeel({ pool: { max: 4 }, limits: { tenantConnections: 4 }, timeoutGraceMs: 1_000 })
    keel = k
    await warm(k, 4)
    await pause('primary')
    let resumed = false
    const db = k.tenant('acme')
    const { outcomes, all } = track(
      [
        db.query('SELECT 1 AS one', [], { statementTimeoutMs: 1_000 }),
        db.query('SELECT 2 AS two', [], { statementTimeoutMs: 1_000 }),
        db.query('SELECT 3 AS three', [], { signal: AbortSignal.timeout(1_000) }),
        db
          .transaction((tx) => tx.query('SELECT 4 AS four'), { statementTimeoutMs: 1_000 })
          .then(() => ({
            rows: [],
          })),
      ],
      () => resumed,
    )
    // A bound, not a measurement: each call must have settled long before the host comes back.
    await Promise.race([all, new Promise((r) => setTimeout(r, HELD_MS))])
    const beforeResume = outcomes.map((o) => (o === undefined ? 'pending' : o.code))
    await resume('primary')
    resumed = true
    await all
    expect(beforeResume).toEqual([
      'KEEL_QUERY_TIMEOUT',
      'KEEL_QUERY_TIMEOUT',
      'KEEL_ABORTED',
      'KEEL_QUERY_TIMEOUT',
    ])
    expect(outcomes.map((o) => o?.afterResume)).toEqual([false, false, false, false])
    expect(outcomes.every((o) => o?.ok === false)).toBe(true)
    // The abandoned connections were closed, not returned: the pool serves again at once.
    const after = await Promise.all(
      Array.from({ length: 4 }, () =>
        db.query<{ n: number }>('SELECT 7 AS n', [], { statementTimeoutMs: 5_000 }),
      ),
    )
    expect(after.map((r) => r.rows[0]?.n)).toEqual([7, 7, 7, 7])
    expect((await k.health()).primary.status).toBe('up')
  })

  it("pg's query_timeout is enforced on the client side: KEEL_QUERY_TIMEOUT, and the connection is not reused", async () => {
    const k = testKeel({ pool: { max: 1, query_timeout: 300 }, limits: { statementTimeoutMs: 0 } })
    keel = k
    const db = k.tenant('acme')
    const pid = (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    await expect(db.query('SELECT pg_sleep(5)')).rejects.toMatchObject({ code: 'KEEL_QUERY_TIMEOUT' })
    const next = (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    expect(next).not.toBe(pid)
  })

  it('reads in flight on a stopped replica move to another host; a replica read past its deadline does too', async () => {
    const exporter = new InMemorySpanExporter()
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    const k = testKeel({
      telemetry: { tracerProvider },
      replicas: ['replica1', 'replica2'],
      maxReplicaLagMs: 60_000,
      replicaPollMs: 100,
      pool: { max: 6 },
      limits: { tenantConnections: 6 },
      timeoutGraceMs: 1_000,
    })
    keel = k
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
    await warm(k, 6, { consistency: 'eventual' })
    const stack = readStack()
    const replica1 = stack.replicas.find((r) => r.name === 'replica1')!.port
    exporter.reset()
    await pause('replica1')
    let resumed = false
    const db = k.tenant('reader')
    const read = (options: { statementTimeoutMs?: number }) =>
      db.query<{ port: number }>('SELECT inet_server_port() AS port', [], {
        consistency: 'eventual',
        ...options,
      })
    // Least-outstanding balancing sends about half of these to replica1 before the monitor sees it stop.
    const { outcomes, all } = track(
      [
        read({}),
        read({}),
        read({}),
        read({}),
        read({ statementTimeoutMs: 1_000 }),
        read({ statementTimeoutMs: 1_000 }),
      ],
      () => resumed,
    )
    await Promise.race([all, new Promise((r) => setTimeout(r, HELD_MS))])
    const beforeResume = outcomes.map((o) => (o === undefined ? 'pending' : o.ok ? 'ok' : o.code))
    const health = await k.health()
    await resume('replica1')
    resumed = true
    await all
    expect(beforeResume).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok'])
    expect(outcomes.every((o) => o?.port !== replica1)).toBe(true)
    // Some of them were running on replica1 when it stopped, and were retried elsewhere.
    const retriedFromReplica1 = exporter
      .getFinishedSpans()
      .flatMap((span) => span.events)
      .filter((e) => e.name === 'keel.retry' && e.attributes?.['keel.replica.name'] === 'replica1')
    expect(retriedFromReplica1.length).toBeGreaterThan(0)
    expect(health.replicas.find((r) => r.name === 'replica1')).toMatchObject({ inRotation: false })
    await waitFor('replica1 back in rotation', async () =>
      (await k.health()).replicas.some((r) => r.name === 'replica1' && r.inRotation),
    )
  })
})
