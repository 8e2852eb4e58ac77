import { pipeline } from 'node:stream/promises'
import type { Keel } from '@keel/core'
import { keelErrorHandler, keelExpress } from '@keel/express'
import express from 'express'
import { tenantExists } from './invoices.js'
import { appRoutes, currentTraceId, runRoute } from './routes.js'

/** The example on Express 5: body parsers, keel's middleware, the shared routes, keel's error handler. */
export function buildExpressApp(keel: Keel): express.Express {
  const app = express()
  app.disable('x-powered-by')
  app.use(express.json({ limit: '1mb' }))
  app.use(express.text({ type: 'text/csv', limit: '5mb' }))
  app.use(
    keelExpress(keel, {
      tenant: 'header',
      tenantExists: (id) => tenantExists(keel.tenant(id)),
      health: true,
    }),
  )
  for (const route of appRoutes) {
    const register = route.method === 'GET' ? app.get.bind(app) : app.post.bind(app)
    register(route.path, async (req, res) => {
      const traceId = currentTraceId()
      if (traceId !== undefined) res.setHeader('x-trace-id', traceId)
      const out = await runRoute(route, {
        db: req.db,
        params: req.params as Record<string, string>,
        query: req.query,
        body: req.body,
        header: (name) => req.get(name),
      })
      if (out.stream !== undefined) {
        // attachment() guesses a type from the name: the route's own type goes after it.
        res.attachment(out.stream.filename)
        res.status(out.status).type(out.stream.contentType)
        if (out.stream.bytes !== undefined) res.setHeader('content-length', String(out.stream.bytes))
        // A failure mid-body destroys the response (the client sees a cut transfer, never a short
        // "complete" file); a client that leaves destroys the export (its transaction ends).
        await pipeline(out.stream.body, res).catch(() => undefined)
        return
      }
      res.status(out.status).json(out.body)
    })
  }
  app.use(keelErrorHandler())
  return app
}
