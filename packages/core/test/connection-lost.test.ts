import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startTcpProxy, type TcpProxy } from '../../../scripts/stack/tcp-proxy.mjs'
import { createKeel, isKeelError, type Keel } from '../src/index.js'
import { createRlsTable, dropTable } from './support/db.js'
import { readStack } from './support/stack.js'

// The socket to the primary dies under a call (the primary killed, a pooler or a load balancer
// restarted): here a TCP proxy in front of the shared primary cuts every connection, so nothing else
// in the stack is disturbed. Inside a transaction, as outside one, the caller gets KEEL_QUERY_TIMEOUT
// with reason connection_lost (the outcome is unknown), never the driver's raw error.

const table = 'connection_lost_items'
let proxy: TcpProxy | undefined
let keel: Keel | undefined

beforeAll(async () => {
  await createRlsTable(table)
})
afterEach(async () => {
  await keel?.close()
  keel = undefined
  await proxy?.close()
  proxy = undefined
})
afterAll(async () => {
  await dropTable(table)
})

async function throughProxy(): Promise<Keel> {
  proxy = await startTcpProxy(readStack().primary.port)
  keel = createKeel({ postgres: { primary: { connectionString: proxy.url() }, pool: { max: 2 } } })
  return keel
}

function expectConnectionLost(error: unknown): void {
  expect(isKeelError(error, 'KEEL_QUERY_TIMEOUT'), String(error)).toBe(true)
  expect((error as { details?: { reason?: string } }).details?.reason).toBe('connection_lost')
  expect((error as Error).cause).toBeInstanceOf(Error)
}

describe('the connection to the primary dies under a call', () => {
  it('a statement inside a transaction: KEEL_QUERY_TIMEOUT / connection_lost, and the pool serves the next call once the host is back', async () => {
    const k = await throughProxy()
    const db = k.tenant('lost1')
    const failure = await db
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('lost1', 'a')`)
        const slow = tx.query('SELECT pg_sleep(5)')
        setTimeout(() => void proxy!.cut(), 300)
        await slow
      })
      .catch((e: unknown) => e)
    expectConnectionLost(failure)
    await proxy!.point(readStack().primary.port)
    expect((await db.query<{ n: number }>('SELECT 1 AS n')).rows[0]!.n).toBe(1)
    // The transaction never committed.
    expect((await db.query(`SELECT 1 FROM ${table} WHERE body = 'a'`)).rowCount).toBe(0)
  })

  it('the COMMIT: KEEL_QUERY_TIMEOUT / connection_lost (whether it committed is unknown)', async () => {
    const k = await throughProxy()
    const db = k.tenant('lost2')
    const failure = await db
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('lost2', 'b')`)
        await proxy!.cut()
      })
      .catch((e: unknown) => e)
    expectConnectionLost(failure)
  })
})
