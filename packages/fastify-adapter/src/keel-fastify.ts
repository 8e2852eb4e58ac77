/// <reference path="./fastify-augmentation.d.ts" />
import { type Keel, KeelError, type TenantClient } from '@keel/core'
import {
  consistencyHeaders,
  HttpServerSpan,
  httpTracer,
  type KeelHttpOptions,
  LIVENESS_BODY,
  readiness,
  resolveHttpOptions,
  tenantFromRequest,
} from '@keel/core/http'
import { context } from '@opentelemetry/api'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { keelErrorHandler, safeErrorHandler } from './keel-error-handler.js'
import { requestSpans } from './request-span.js'

export interface KeelFastifyOptions extends KeelHttpOptions<FastifyRequest> {
  keel: Keel
  /** Close keel when Fastify closes (`app.close()`, after requests in flight). @default true */
  closeKeel?: boolean
  /**
   * Answer errors thrown by routes with the adapters' JSON: KeelErrors by code (503 + Retry-After for
   * KEEL_TENANT_BUSY), other errors without internals (safeErrorHandler) instead of Fastify's default
   * handler, which puts the error's message in the body. An error handler the app set before
   * registering keel still gets the non-keel errors. false when the app sets its own afterwards: wrap
   * it with keelErrorHandler(). @default true
   */
  errorHandler?: boolean
}

const VERSION = '0.1.0'

const kDb = Symbol('keel.db')

/** The request's tenant client, null when the plugin gave it none. */
function tenantOf(request: FastifyRequest): TenantClient | null {
  return (request as unknown as Record<symbol, TenantClient | null>)[kDb] ?? null
}

function throwNoTenant(request: FastifyRequest): never {
  throw new KeelError(
    'KEEL_NO_TENANT_CONTEXT',
    `request.db was read on ${request.method} ${request.url}, a route @keel/fastify gives no tenant (health, 404, or config { keel: false })`,
    { details: { method: request.method, url: request.url } },
  )
}

const plugin: FastifyPluginAsync<KeelFastifyOptions> = async (fastify, options) => {
  const { keel, closeKeel = true, errorHandler = true, ...httpOptions } = options
  const resolved = resolveHttpOptions(httpOptions)
  const tracer = resolved.tracing ? httpTracer(keel, '@keel/fastify', VERSION) : undefined

  fastify.decorate('keel', keel)
  // The client lives under a symbol, null up front and set per request (every request object keeps one
  // shape, V8); `request.db` reads it and throws on a request the plugin did not give a tenant.
  fastify.decorateRequest<TenantClient | null>(kDb, null)
  fastify.decorateRequest('db', {
    getter(this: FastifyRequest): TenantClient {
      return tenantOf(this) ?? throwNoTenant(this)
    },
    setter(this: FastifyRequest, db: TenantClient) {
      ;(this as unknown as Record<symbol, TenantClient | null>)[kDb] = db
    },
  })
  if (closeKeel) fastify.addHook('onClose', () => keel.close())
  if (errorHandler) {
    // Fastify's own default sends error.message in 500 bodies: replace it, but chain to an app's.
    const current = fastify.errorHandler
    fastify.setErrorHandler(
      keelErrorHandler(current.name === 'defaultErrorHandler' ? safeErrorHandler : current),
    )
  }

  const noTenant = { config: { keel: false as const } }
  if (resolved.liveness !== undefined) fastify.get(resolved.liveness, noTenant, async () => LIVENESS_BODY)
  if (resolved.readiness !== undefined) {
    fastify.get(resolved.readiness, noTenant, async (_request, reply) => {
      const { status, body } = await readiness(keel, resolved.readinessRequiresRedis)
      return reply.code(status).send(body)
    })
  }

  // Routing is done by onRequest, so params exist; the body is not read yet, so a request without a
  // tenant is refused before it is parsed.
  fastify.addHook('onRequest', async (request, reply) => {
    if (request.is404 || request.routeOptions.config.keel === false) return
    const span =
      tracer &&
      HttpServerSpan.start(tracer, {
        method: request.method,
        path: request.url.split('?', 1)[0]!,
        scheme: request.protocol,
        route: request.routeOptions.url,
        headers: request.headers,
      })
    if (span !== undefined) requestSpans.set(request, span)
    const outcome = await tenantFromRequest(keel, resolved, request, span)
    if (outcome.error !== undefined) {
      const { status, headers, body } = outcome.error
      return reply.code(status).headers(headers).send(body)
    }
    request.db = outcome.db
  })

  // Entered in preHandler, after the body was read: stream callbacks of body parsing would run outside
  // any context entered earlier. Callback style, so the handler runs inside keel.run().
  fastify.addHook('preHandler', (request, _reply, done) => {
    const db = tenantOf(request)
    const span = requestSpans.get(request)
    const run = db === null ? done : () => keel.run(db, done)
    if (span === undefined) run()
    else context.with(span.context, run)
  })

  fastify.addHook('onSend', (request, reply, payload, done) => {
    // Fastify appends set-cookie values rather than replacing them.
    for (const [name, value] of consistencyHeaders(
      resolved,
      tenantOf(request),
      request.protocol === 'https',
    )) {
      reply.header(name, value)
    }
    done(null, payload)
  })

  if (tracer !== undefined) {
    fastify.addHook('onResponse', (request, reply, done) => {
      requestSpans.get(request)?.end(reply.statusCode)
      done()
    })
    fastify.addHook('onRequestAbort', (request, done) => {
      requestSpans.get(request)?.end(undefined)
      done()
    })
  }
}

/**
 * Fastify 5 plugin: `request.db` (the tenant client), `fastify.keel`, keel.run() around handlers,
 * the consistency token in and out, health routes, KeelError replies and keel closed in onClose.
 */
export const keelFastify = fp(plugin, { name: '@keel/fastify', fastify: '5.x' })
