import { httpErrorFor } from '@keel/core'
import { safeHttpError } from '@keel/core/http'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { requestSpans } from './request-span.js'

type ErrorHandler = (
  this: FastifyInstance,
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
) => unknown

/**
 * A Fastify error handler answering a KeelError (e.g. KEEL_TENANT_BUSY: 503 + Retry-After) with the
 * adapters' JSON body and handing every other error to `fallback` (default: safeErrorHandler, which
 * answers without internals). The plugin installs it (option `errorHandler`); an app with its own
 * handler registers the plugin with `errorHandler: false` and wraps its handler:
 * `app.setErrorHandler(keelErrorHandler(own))`.
 */
export function keelErrorHandler(fallback: ErrorHandler = safeErrorHandler): ErrorHandler {
  return function keelErrorHandler(error, request, reply) {
    const mapped = httpErrorFor(error)
    if (mapped === undefined) return fallback.call(this, error, request, reply)
    requestSpans.get(request)?.setErrorType(mapped.body.error.code)
    return reply.code(mapped.status).headers(mapped.headers).send(mapped.body)
  }
}

/**
 * Any error, answered like the adapters answer keel's (ADR 0026): Fastify's default handler puts the
 * error's message (a Postgres message, a connection string) in the body of a 500. Client errors keep
 * their status (a schema validation keeps its message); server errors get a bare 500 and are logged
 * with the request's logger, as Fastify's default handler logs them.
 */
export function safeErrorHandler(
  this: FastifyInstance,
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const mapped = safeHttpError(error)
  if (mapped.status >= 500) request.log.error({ err: error }, 'keel fastify: a route failed')
  else request.log.info({ err: error }, 'keel fastify: client error')
  requestSpans.get(request)?.setErrorType(mapped.body.error.code)
  return reply.code(mapped.status).headers(mapped.headers).send(mapped.body)
}
