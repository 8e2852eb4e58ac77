import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'

// pg rejects a statement at its ErrorResponse and learns the transaction status from the ReadyForQuery
// after it. When the two arrive in separate reads (seen under load in the suite: 25P02 on the next
// statement of the pool), a failed BEGIN ... COMMIT batch was judged by the status from before the batch
// (idle), not rolled back, and its connection went back to the pool inside an aborted transaction.
// This proxy holds every backend message after an ErrorResponse back for a while, so the gap is certain.
const HOLD_MS = 60

function splittingProxy(target: { host: string; port: number }) {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host)
    sockets.add(client).add(upstream)
    client.pipe(upstream)
    let pending = Buffer.alloc(0)
    let releaseAt = 0
    upstream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      // Whole messages only: a type byte and a length that counts itself.
      while (pending.length >= 5) {
        const size = 1 + pending.readUInt32BE(1)
        if (pending.length < size) break
        const message = pending.subarray(0, size)
        pending = pending.subarray(size)
        const delay = Math.max(0, releaseAt - Date.now())
        if (delay === 0) client.write(message)
        else setTimeout(() => client.write(message), delay)
        if (message[0] === 0x45 /* E */) releaseAt = Date.now() + HOLD_MS
      }
    })
    const close = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
  })
  return {
    listen: () =>
      new Promise<number>((resolve) =>
        server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
      ),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

const table = 'error_before_ready_items'
const stack = readStack()
const proxy = splittingProxy({ host: '127.0.0.1', port: stack.primary.port })
let keel: ReturnType<typeof testKeel>

beforeAll(async () => {
  await createRlsTable(table)
  await awaitOnReplicas(table)
  const port = await proxy.listen()
  const url = new URL(stack.primary.url)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  // One connection, a replica: a write is BEGIN, scope, the statement, COMMIT and the WAL position in
  // one batch, and every statement after it runs on the same connection.
  keel = testKeel({ connectionString: url.toString(), replicas: ['replica1'], pool: { max: 1 } })
})
afterAll(async () => {
  await keel?.close()
  await proxy.close()
  await dropTable(table)
})

describe('an error whose ReadyForQuery arrives later', () => {
  it('a failed write batch is rolled back before its connection is reused: the next statements run', async () => {
    const db = keel.tenant('acme')
    const body = `ok-${randomBytes(4).toString('hex')}`
    for (let i = 0; i < 3; i++) {
      // Another tenant's row: refused by the policy (42501) inside the batch's explicit transaction.
      await expect(
        db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'x')`, undefined, {
          route: 'primary',
        }),
      ).rejects.toMatchObject({ code: '42501' })
      await db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', $1)`, [`${body}-${i}`])
      const { rows } = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${table} WHERE body LIKE $1`,
        [`${body}-%`],
        { route: 'primary' },
      )
      expect(rows[0]!.n).toBe(i + 1)
    }
  })

  it('a failed statement outside a transaction keeps its (clean) connection: released once the status is known', async () => {
    const db = keel.tenant('acme')
    const pid = async () =>
      (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid', undefined, { route: 'primary' }))
        .rows[0]!.pid
    const before = await pid()
    for (let i = 0; i < 3; i++) {
      await expect(db.query('SELECT 1/0', undefined, { route: 'primary' })).rejects.toMatchObject({
        code: '22012',
      })
    }
    // One connection in the pool: the same server process answers, so none was destroyed on the way.
    expect(await pid()).toBe(before)
  })

  it('a failed statement in a transaction and the pool after it', async () => {
    const db = keel.tenant('acme')
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', 'x')`)
      }),
    ).rejects.toMatchObject({ code: '42501' })
    const { rows } = await db.query<{ one: number }>('SELECT 1 AS one', undefined, { route: 'primary' })
    expect(rows).toEqual([{ one: 1 }])
  })
})
