import { createRequire } from 'node:module'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  backendKeyOf,
  connectionOf,
  newCancelConnection,
  PG_QUERY_METHODS,
  PgQuery,
  settledTransactionStatus,
} from '../src/pool/pg-internals.js'
import { ScopedQuery } from '../src/pool/scoped-query.js'
import { connect } from './support/db.js'
import { satisfies } from './support/version-range.js'
import { waitFor } from './support/wait.js'

// The guard of src/pool/pg-internals.ts (ADR 0028): every piece of node-postgres keel uses beyond its
// documented API, checked against the installed pg. A pg release that moves one fails here by name.
const require = createRequire(import.meta.url)
const core = require('../package.json') as { peerDependencies: Record<string, string> }
const installed = (require('pg/package.json') as { version: string }).version

const send = <R>(client: pg.Client, query: unknown) =>
  new Promise<R>((resolve, reject) => {
    ;(query as { callback: (e: Error | null, r?: unknown) => void }).callback = (error, result) =>
      error ? reject(error) : resolve(result as R)
    client.query(query as never)
  })

describe("pg's internals keel relies on", () => {
  let client: pg.Client
  beforeAll(async () => {
    client = await connect('app')
  })
  afterAll(() => client.end())

  it(`the installed pg (${installed}) is in keel's peer range`, () => {
    expect(satisfies(installed, core.peerDependencies.pg!)).toBe(true)
  })

  it("the newest public API keel calls exists: client.getTransactionStatus (pg 8.21, the range's floor)", () => {
    expect(client.getTransactionStatus).toBeTypeOf('function')
    expect(client.getTransactionStatus()).toBe('I')
  })

  it('readyForQuery: set at ReadyForQuery with the status, cleared while a statement runs', async () => {
    expect(settledTransactionStatus(client)).toBe('I')
    const running = client.query('SELECT pg_sleep(0.05)')
    expect(settledTransactionStatus(client)).toBeUndefined()
    await running
    await client.query('BEGIN')
    expect(settledTransactionStatus(client)).toBe('T')
    await client.query('SELECT 1/0').catch(() => undefined)
    await waitFor('the aborted status', () => settledTransactionStatus(client) === 'E')
    await client.query('ROLLBACK')
    expect(settledTransactionStatus(client)).toBe('I')
  })

  it('Query has the methods ScopedQuery overrides and calls', () => {
    expect(PgQuery).toBe(pg.Query)
    const missing = PG_QUERY_METHODS.filter(
      (m) => typeof (PgQuery.prototype as unknown as Record<string, unknown>)[m] !== 'function',
    )
    expect(missing).toEqual([])
  })

  it("a client's protocol connection: prepared-statement record, socket, extended-protocol writers", () => {
    const connection = connectionOf(client) as unknown as Record<string, unknown>
    expect(connection.parsedStatements).toBeTypeOf('object')
    for (const writer of ['parse', 'bind', 'execute', 'close', 'sync']) {
      expect(connection[writer], `connection.${writer}`).toBeTypeOf('function')
    }
    const stream = connection.stream as Record<string, unknown>
    for (const m of ['cork', 'uncork', 'destroy']) expect(stream[m], `stream.${m}`).toBeTypeOf('function')
  })

  it('the backend key pg kept from startup is the server process, and where it connected', async () => {
    const key = backendKeyOf(client)
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
    expect(key.processID).toBe(rows[0]!.pid)
    expect(key.secretKey).toBeTypeOf('number')
    expect(key.host).toBe(client.host)
    expect(key.port).toBe(client.port)
  })

  it("pg's Connection sends a CancelRequest that cancels the running statement", async () => {
    const sleeping = client.query('SELECT pg_sleep(30)')
    const key = backendKeyOf(client)
    // A cancel that lands before the statement starts cancels nothing: wait until it runs.
    const watcher = await connect('app')
    try {
      await waitFor('the statement to run', async () => {
        const { rows } = await watcher.query(
          "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
          [key.processID],
        )
        return rows.length === 1
      })
    } finally {
      await watcher.end()
    }
    const con = newCancelConnection()
    con.on('error', () => undefined)
    con.on('connect', () => con.cancel(key.processID!, key.secretKey!))
    con.stream.unref()
    con.connect(key.port!, key.host!)
    await expect(sleeping).rejects.toMatchObject({ code: '57014' })
    con.stream.destroy()
  })

  it('a ScopedQuery sends preludes, the statement and postludes in one batch (prepare ends in _getRows)', async () => {
    const q = new ScopedQuery(
      'SELECT $1::int AS n',
      [7],
      [{ text: "SELECT set_config('keel.guard', 'on', true)" }],
      4,
      [{ name: 'guard', text: "SELECT current_setting('keel.guard', true)" }],
    )
    const result = await send<pg.QueryResult>(client, q)
    expect(result.rows).toEqual([{ n: 7 }])
    expect(q.preludeRows).toEqual([['on']])
    expect(q.postludeRows).toEqual([['on']])
    // The named postlude is recorded where pg records its own prepared statements.
    expect(Object.keys(connectionOf(client).parsedStatements)).toContain(q.names.at(-1))
  })
})
