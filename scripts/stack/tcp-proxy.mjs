// A fixed host:port in front of a Postgres server, re-pointable: what a DNS name, a virtual IP or a
// PgBouncer gives an app in production. The failover rehearsal (scripts/gameday-primary-down.mjs) and
// test (packages/core/test/primary-failover.test.ts) give keel this address as its primary URL, cut
// it (the old primary dies: connections reset, new ones refused), then point it at the promoted
// standby. Node built-ins only; see tcp-proxy.d.mts for types.

import net from 'node:net'

const HOST = '127.0.0.1'

/** Starts a proxy on a free loopback port (or `port`) forwarding to `targetPort`. */
export async function startTcpProxy(targetPort, { port = 0 } = {}) {
  let target = targetPort
  const sockets = new Set()
  let server

  const listen = (at) =>
    new Promise((resolve, reject) => {
      const srv = net.createServer((client) => {
        const upstream = net.connect({ host: HOST, port: target })
        for (const s of [client, upstream]) {
          sockets.add(s)
          s.on('close', () => sockets.delete(s))
          s.on('error', () => {
            client.destroy()
            upstream.destroy()
          })
        }
        client.pipe(upstream)
        upstream.pipe(client)
      })
      srv.once('error', reject)
      srv.listen({ host: HOST, port: at }, () => resolve(srv))
    })

  server = await listen(port)
  const bound = server.address().port

  const closeServer = () =>
    new Promise((resolve) => {
      if (server === undefined) return resolve()
      const srv = server
      server = undefined
      srv.close(() => resolve())
    })

  return {
    port: bound,
    url(user = 'keel_app:app', database = 'keel') {
      return `postgres://${user}@${HOST}:${bound}/${database}`
    },
    get target() {
      return target
    },
    /** The server behind it dies: every connection reset, new ones refused (nothing listens). */
    async cut() {
      for (const s of [...sockets]) s.destroy()
      await closeServer()
    },
    /** Leads to `port` from now on (listening again after a cut); open connections keep their server. */
    async point(to) {
      target = to
      if (server === undefined) server = await listen(bound)
    },
    async close() {
      for (const s of [...sockets]) s.destroy()
      await closeServer()
    },
  }
}
