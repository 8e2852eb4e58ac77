import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createKeel, type Keel } from '../src/index.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// The replica monitor's probe of the primary can lose its connection while the primary is fine: its
// backend terminated, a pooler handing it a server connection that just died (a CI run through
// PgBouncer caught it: the next write was refused as primary_down for a poll interval). A proxy in front
// of the primary cuts the connection that carries the probe's query, once: keel tries again on a new
// connection and does not call the primary down.

let keel: Keel | undefined
const closers: Array<() => void> = []
afterEach(async () => {
  await keel?.close()
  keel = undefined
  for (const close of closers.splice(0)) close()
})

/** A proxy to the primary; `cutNextProbe()` cuts the next connection that sends the monitor's probe. */
async function probeCuttingProxy(): Promise<{ url: string; cutNextProbe(): void; cuts(): number }> {
  const stack = readStack()
  const target = new URL(stack.primary.url)
  let armed = false
  let cuts = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) })
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => undefined)
      s.on('close', () => sockets.delete(s))
    }
    client.on('data', (chunk: Buffer) => {
      if (armed && chunk.toString('latin1').includes('pg_current_wal_insert_lsn')) {
        armed = false
        cuts++
        client.destroy()
        upstream.destroy()
        return
      }
      upstream.write(chunk)
    })
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  const url = new URL(stack.primary.url)
  url.port = String((server.address() as net.AddressInfo).port)
  return {
    url: url.toString(),
    cutNextProbe: () => {
      armed = true
    },
    cuts: () => cuts,
  }
}

describe('the primary probe loses its connection, the primary is fine', () => {
  it('one cut probe does not mark the primary down: no primary_down signal, writes keep working', async () => {
    const stack = readStack()
    const proxy = await probeCuttingProxy()
    const signals: string[] = []
    const record = (obj: unknown) => {
      const signal = (obj as { signal?: string }).signal
      if (signal !== undefined) signals.push(signal)
    }
    keel = createKeel({
      postgres: {
        primary: { connectionString: proxy.url },
        replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
        replicaPollMs: 100,
      },
      logger: { debug: () => undefined, info: record, warn: record, error: record },
    })
    const k = keel
    await waitFor('replicas in rotation', async () => (await k.health()).replicas.some((r) => r.inRotation))
    proxy.cutNextProbe()
    await waitFor('the probe cut', async () => proxy.cuts() === 1)
    // A few more polls.
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(signals).not.toContain('primary_down')
    expect((await k.health()).degraded).toBeUndefined()
    await k.tenant('probe').query('SELECT 1', [], { consistency: 'strong' })
  })
})
