import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTcpProxy, type TcpProxy } from '../../../scripts/stack/tcp-proxy.mjs'
import { createKeel, isKeelError, type Keel } from '../src/index.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { readStack, stackCtl } from './support/stack.js'
import { waitFor } from './support/wait.js'

// A failover as an app sees it (ADR 0043): its primary URL is a fixed address (a DNS name, a virtual
// IP, a pooler: here a TCP proxy) that first leads to the primary; the primary dies (the proxy cuts
// every connection and refuses new ones); an operator promotes a standby and repoints the address.
// The standby is the stack's on-demand `spare`, thrown away afterwards: the shared primary is never
// promoted, and the shared replicas, still following it, are "replicas left on the old timeline".

const table = 'failover_items'
let proxy: TcpProxy | undefined
let keel: Keel | undefined

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  await stackCtl('down', 'spare')
  await stackCtl('up', 'spare')
})
afterAll(async () => {
  await keel?.close()
  await proxy?.close()
  await stackCtl('down', 'spare')
  await dropTable(table)
})

async function query<R extends pg.QueryResultRow>(url: string, sql: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<R>(sql)).rows
  } finally {
    await client.end()
  }
}

function timelineOf(token: string): string {
  return token.split('.')[2]!
}

describe('a standby promoted behind the primary URL', () => {
  it('keel recovers without a restart, treats old-timeline tokens as unknown (reads the primary), and keeps replicas left on the old timeline out of read-your-writes reads', async () => {
    const stack = readStack()
    const spare = stack.spare!
    proxy = await startTcpProxy(stack.primary.port)
    const k = createKeel({
      postgres: {
        primary: { connectionString: proxy.url() },
        replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
        replicaPollMs: 100,
        maxReplicaLagMs: 60_000,
        pool: { max: 4 },
      },
    })
    keel = k
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.every((r) => r.inRotation))
    const before = k.tenant('f0')
    await before.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('f0', 'before')`)
    const oldToken = before.consistencyToken!
    // The standby has the write before it is promoted (no data lost in this rehearsal).
    await waitFor('spare replayed the write', async () => {
      const rows = await query<{ n: string }>(
        spare.superUrl,
        `SELECT count(*)::text AS n FROM ${table} WHERE body = 'before'`,
      )
      return rows[0]?.n === '1'
    })

    await proxy.cut()
    await waitFor('degraded', async () => (await k.health()).degraded !== undefined, 15_000)
    await waitFor('writes refused at once (primary_down)', () =>
      k
        .tenant('f0')
        .query(`INSERT INTO ${table} (tenant_id) VALUES ('f0')`)
        .then(
          () => false,
          (error: unknown) =>
            isKeelError(error, 'KEEL_DB_UNAVAILABLE') && error.details.reason === 'primary_down',
        ),
    )

    await stackCtl('promote', 'spare')
    await proxy.point(spare.port)
    const after = k.tenant('f0')
    await waitFor('a write succeeds on the promoted standby', async () => {
      try {
        await after.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('f0', 'after')`)
        return true
      } catch {
        return false
      }
    })
    const newToken = after.consistencyToken!
    expect(timelineOf(newToken)).not.toBe(timelineOf(oldToken))
    const health = await k.health()
    expect(health.primary.status).toBe('up')
    expect(health.degraded).toBeUndefined()

    // The old primary's history moves on without the new writes (it was only cut off, as a fenced old
    // primary is): its replicas replay past the new token's position, on the wrong timeline.
    const newLsn = BigInt(`0x${newToken.split('.')[3]}`)
    for (let i = 0; i < 3; i++) await query(stack.primary.superUrl, 'SELECT pg_switch_wal()')
    await query(stack.primary.superUrl, 'CHECKPOINT')
    await waitFor('replica1 replayed past the new token on the old timeline', async () => {
      const rows = await query<{ lsn: string }>(
        stack.replicas[0]!.superUrl,
        "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text AS lsn",
      )
      return BigInt(rows[0]!.lsn) > newLsn
    })
    // The monitor has polled replica1 since: as far as replay positions go, it could serve the token.
    await waitFor('the monitor saw replica1 past the new token', async () => {
      const lsn = (await k.health()).replicas[0]?.replayLsn
      if (lsn == null) return false
      const [hi, lo] = lsn.split('/')
      return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`) > newLsn
    })
    const sql = `SELECT string_agg(body, ',' ORDER BY id) AS bodies, inet_server_port() AS port FROM ${table} WHERE body <> ''`
    // A token from before the failover says nothing about the new primary's WAL: read the primary.
    const old = await k
      .tenant('f0', { consistencyToken: oldToken })
      .query<{ bodies: string; port: number }>(sql)
    expect(old.rows[0]).toEqual({ bodies: 'before,after', port: spare.port })
    // A new token is never checked against a replica's position on the old timeline.
    const fresh = await k
      .tenant('f0', { consistencyToken: newToken })
      .query<{ bodies: string; port: number }>(sql)
    expect(fresh.rows[0]).toEqual({ bodies: 'before,after', port: spare.port })
    await waitFor('the old-timeline replicas leave rotation', async () =>
      (await k.health()).replicas.every((r) => !r.inRotation),
    )
    const replicas = (await k.health()).replicas
    expect(replicas.map((r) => r.error)).toEqual([
      expect.stringMatching(/follows timeline 1, the primary is on timeline 2/),
      expect.stringMatching(/follows timeline 1, the primary is on timeline 2/),
    ])
  })
})
