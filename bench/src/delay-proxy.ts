/**
 * A TCP proxy that delays every chunk by PROXY_DELAY_MS in each direction, preserving order: a
 * stand-in for a cloud database a few milliseconds away. Run as a child process by the tenancy bench
 * (so its timers and copies do not share the benchmark's event loop); it reports its port over IPC.
 * Standalone: PROXY_TARGET_PORT=5432 PROXY_DELAY_MS=2 node dist/delay-proxy.js
 */
import net from 'node:net'

const targetHost = process.env.PROXY_TARGET_HOST ?? '127.0.0.1'
const targetPort = Number(process.env.PROXY_TARGET_PORT ?? '5432')
const delayMs = Number(process.env.PROXY_DELAY_MS ?? '2')
const listenPort = Number(process.env.PROXY_LISTEN_PORT ?? '0')

interface Pending {
  due: number
  chunk: Buffer
}

/** Forwards `from` to `to`, each chunk held until `delayMs` after it arrived; FIFO, so order holds. */
function forwardDelayed(from: net.Socket, to: net.Socket): void {
  const queue: Pending[] = []
  let head = 0
  let timer: NodeJS.Timeout | undefined
  let ended = false

  const flush = (): void => {
    timer = undefined
    const now = performance.now()
    while (head < queue.length && queue[head]!.due <= now) {
      if (!to.destroyed) to.write(queue[head]!.chunk)
      head++
    }
    if (head === queue.length) {
      queue.length = 0
      head = 0
      if (ended && !to.destroyed) to.end()
      return
    }
    timer = setTimeout(flush, Math.max(1, queue[head]!.due - now))
  }

  from.on('data', (chunk: Buffer) => {
    queue.push({ due: performance.now() + delayMs, chunk })
    timer ??= setTimeout(flush, delayMs)
  })
  from.on('end', () => {
    ended = true
    if (timer === undefined && head === queue.length && !to.destroyed) to.end()
  })
}

const server = net.createServer((client) => {
  const upstream = net.connect({ host: targetHost, port: targetPort })
  client.setNoDelay(true)
  upstream.setNoDelay(true)
  const destroyBoth = (): void => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', destroyBoth)
  upstream.on('error', destroyBoth)
  client.on('close', () => upstream.destroy())
  upstream.on('close', () => client.destroy())
  forwardDelayed(client, upstream)
  forwardDelayed(upstream, client)
})

server.listen(listenPort, '127.0.0.1', () => {
  const address = server.address() as net.AddressInfo
  if (process.send !== undefined) process.send({ port: address.port })
  else
    console.log(
      `delay proxy 127.0.0.1:${address.port} -> ${targetHost}:${targetPort}, ${delayMs} ms each way`,
    )
})

// Under the bench, the parent going away (or closing the IPC channel) ends the proxy.
process.on('disconnect', () => process.exit(0))
process.on('SIGTERM', () => process.exit(0))
