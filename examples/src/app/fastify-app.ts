import type { Keel } from '@keel/core'
import { keelFastify } from '@keel/fastify'
import Fastify, { type FastifyInstance } from 'fastify'
import { tenantExists } from './invoices.js'
import { appRoutes, currentTraceId, runRoute } from './routes.js'

/** The example on Fastify 5: keel's plugin, a text/csv parser, the shared routes. */
export async function buildFastifyApp(keel: Keel): Promise<FastifyInstance> {
  const app = Fastify({ bodyLimit: 5 * 1024 * 1024 })
  app.addContentTypeParser('text/csv', { parseAs: 'string' }, (_req, body, done) => done(null, body))
  await app.register(keelFastify, {
    keel,
    tenant: 'header',
    tenantExists: (id: string) => tenantExists(keel.tenant(id)),
    health: true,
  })
  for (const route of appRoutes) {
    app.route({
      method: route.method,
      url: route.path,
      handler: async (request, reply) => {
        const traceId = currentTraceId()
        if (traceId !== undefined) reply.header('x-trace-id', traceId)
        const out = await runRoute(route, {
          db: request.db,
          params: request.params as Record<string, string>,
          query: request.query,
          body: request.body,
          header: (name) => {
            const value = request.headers[name]
            return Array.isArray(value) ? value[0] : value
          },
        })
        reply.code(out.status)
        if (out.stream !== undefined) {
          reply.header('content-type', out.stream.contentType)
          reply.header('content-disposition', `attachment; filename="${out.stream.filename}"`)
          if (out.stream.bytes !== undefined) reply.header('content-length', String(out.stream.bytes))
          // Fastify pipes the stream, destroying it when the client leaves or the response fails.
          return reply.send(out.stream.body)
        }
        return out.body
      },
    })
  }
  return app
}
