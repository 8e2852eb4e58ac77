import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { cacheKeel, freshPrefix, sleep } from './support/cache.js'
import { readStack } from './support/stack.js'

// A process whose invalidation subscription is not confirmed yet does not hear invalidations. A value
// it cached in L1 in that window (Redis answering its commands) was served after an invalidation had
// resolved everywhere else: a CI run on a loaded machine saw it, a worker process reading the old value.
// Here a proxy in front of Redis holds the SUBSCRIBE of one keel for a while, deterministically.

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/**
 * A proxy to the stack's Redis that holds a connection's traffic for `holdMs` from its SUBSCRIBE on;
 * `cutSubscribers()` drops the connections that subscribed (the client reconnects through it).
 */
async function subscribeHoldingProxy(holdMs: number): Promise<{ url: string; cutSubscribers(): void }> {
  const target = new URL(readStack().redis.url)
  const sockets = new Set<net.Socket>()
  const subscribers = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) })
    sockets.add(client)
    sockets.add(upstream)
    for (const s of [client, upstream]) s.on('error', () => undefined)
    let held: Promise<void> | undefined
    client.on('data', (chunk: Buffer) => {
      if (/subscribe/i.test(chunk.toString('latin1'))) subscribers.add(client)
      if (held === undefined && /subscribe/i.test(chunk.toString('latin1')))
        held = sleep(holdMs).then(() => undefined)
      if (held === undefined) upstream.write(chunk)
      else void held.then(() => upstream.write(chunk))
    })
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  const url = new URL(target)
  url.port = String((server.address() as net.AddressInfo).port)
  return {
    url: url.toString(),
    cutSubscribers: () => {
      for (const socket of subscribers) socket.destroy()
      subscribers.clear()
    },
  }
}

/**
 * `late` reaches Redis through the proxy (its SUBSCRIBEs held 1.5 s), `other` directly; `read()` is
 * late's cached read of one tagged key, whose loader returns `source.value`.
 */
async function twoProcesses() {
  const prefix = freshPrefix()
  const proxy = await subscribeHoldingProxy(1_500)
  const late = cacheKeel({ prefix, redis: { url: proxy.url, commandTimeoutMs: 200 } })
  const other = cacheKeel({ prefix })
  closers.push(
    () => late.close(),
    () => other.close(),
  )
  const source = { value: 'v1' }
  return {
    proxy,
    source,
    read: () => late.tenant('acme').cached({ key: 'list', tags: ['invoices'] }, async () => source.value),
    invalidateElsewhere: () => other.tenant('acme').invalidate({ tags: ['invoices'] }),
  }
}

describe('cache: the moments before the invalidation subscription is confirmed', () => {
  it('a value read then is not kept in L1: after another process invalidates, the new value is read', async () => {
    const { source, read, invalidateElsewhere } = await twoProcesses()
    // Redis answers `late`'s commands; its SUBSCRIBE is held by the proxy.
    expect(await read()).toBe('v1')
    source.value = 'v2'
    // `late` is not subscribed: nobody waits for it, and it never hears this.
    await invalidateElsewhere()
    expect(await read()).toBe('v2')
    // Once the subscription is confirmed, L1 keeps entries again and invalidations reach it.
    await sleep(2_000)
    expect(await read()).toBe('v2')
    source.value = 'v3'
    await invalidateElsewhere()
    expect(await read()).toBe('v3')
  })

  it('the same while its subscription comes back after a loss: ioredis is ready before Redis confirms the SUBSCRIBE', async () => {
    const { proxy, source, read, invalidateElsewhere } = await twoProcesses()
    await sleep(2_000) // the first subscription confirmed
    proxy.cutSubscribers()
    // ioredis reconnects within ~50 ms and says 'ready'; its SUBSCRIBE waits in the proxy.
    await sleep(400)
    expect(await read()).toBe('v1')
    source.value = 'v2'
    await invalidateElsewhere()
    expect(await read()).toBe('v2')
  })
})
