/// <reference path="./express-request.d.ts" />
import type { Keel, TenantClient } from '@keel/core'
import {
  consistencyHeaders,
  HttpServerSpan,
  httpTracer,
  type KeelHttpOptions,
  LIVENESS_BODY,
  type ResolvedHttpOptions,
  readiness,
  resolveHttpOptions,
  tenantFromRequest,
} from '@keel/core/http'
import { context } from '@opentelemetry/api'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { beforeHeaders } from './before-headers.js'
import { installRequestDb } from './request-db.js'
import { responseSpans } from './request-span.js'
import { sendKeelError } from './send-keel-error.js'

export type KeelExpressOptions = KeelHttpOptions<Request>

const VERSION = '0.1.0'

/**
 * Express 5 middleware: resolves the request's tenant into `req.db` (400/404 JSON when it cannot),
 * runs the rest of the request inside `keel.run(req.db)`, carries the consistency token in and out,
 * serves the health routes, and traces the request when nothing else does. With `{ param }`, mount it
 * on the path that declares the parameter: `app.use('/t/:tenantId', keelExpress(keel, ...))`.
 */
export function keelExpress(keel: Keel, options: KeelExpressOptions): RequestHandler {
  installRequestDb()
  const resolved = resolveHttpOptions(options)
  const tracer = resolved.tracing ? httpTracer(keel, '@keel/express', VERSION) : undefined
  const health = resolved.liveness !== undefined || resolved.readiness !== undefined

  return function keelMiddleware(req, res, next) {
    if (health && (req.method === 'GET' || req.method === 'HEAD')) {
      if (req.path === resolved.liveness) {
        res.json(LIVENESS_BODY)
        return
      }
      if (req.path === resolved.readiness) {
        return readiness(keel, resolved.readinessRequiresRedis).then(({ status, body }) => {
          res.status(status).json(body)
        })
      }
    }
    if (tracer === undefined) return handle(keel, resolved, req, res, next, undefined)
    const span = HttpServerSpan.start(tracer, {
      method: req.method,
      path: req.originalUrl.split('?', 1)[0]!,
      scheme: req.protocol === 'https' ? 'https' : 'http',
      headers: req.headers,
    })
    responseSpans.set(res, span)
    let status: number | undefined
    const end = () => span.end(status)
    res.once('finish', () => {
      status = res.statusCode
      end()
    })
    res.once('close', end)
    return context.with(span.context, handle, undefined, keel, resolved, req, res, next, span)
  }
}

async function handle(
  keel: Keel,
  options: ResolvedHttpOptions<Request>,
  req: Request,
  res: Response,
  next: NextFunction,
  span: HttpServerSpan | undefined,
): Promise<void> {
  let db: TenantClient | undefined
  beforeHeaders(res, () => {
    if (span !== undefined) {
      const route = routeOf(req, options, db)
      if (route !== undefined) span.setRoute(route)
    }
    for (const [name, value] of consistencyHeaders(options, db, req.secure)) {
      if (name === 'set-cookie') res.append(name, value)
      else res.setHeader(name, value)
    }
  })
  const outcome = await tenantFromRequest(keel, options, req, span)
  if (outcome.error !== undefined) return sendKeelError(res, outcome.error)
  db = outcome.db
  req.db = db
  req.keel = keel
  keel.run(db, () => next())
}

/**
 * The route template for the span. Express gives the matched route relative to its router; the
 * router's base is a concrete path, so a tenant taken from a mount parameter is put back as `:param`
 * (a tenant id in span names would make one name per tenant).
 */
function routeOf(
  req: Request,
  options: ResolvedHttpOptions<Request>,
  db: TenantClient | undefined,
): string | undefined {
  const path: unknown = req.route?.path
  if (typeof path !== 'string') return undefined
  const source = options.tenant
  let base = req.baseUrl
  if (db !== undefined && typeof source === 'object' && 'param' in source) {
    const segment = encodeURIComponent(db.tenantId)
    base = base
      .split('/')
      .map((s) => (s === segment ? `:${source.param}` : s))
      .join('/')
  }
  return base + path
}
