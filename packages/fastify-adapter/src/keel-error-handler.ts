import { httpErrorFor } from '@keel/core'
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
 * adapters' JSON body and handing every other error to `fallback`. The plugin installs it around the
 * handler in place (option `errorHandler`); an app with its own handler registers the plugin with
 * `errorHandler: false` and wraps its handler: `app.setErrorHandler(keelErrorHandler(own))`.
 */
export function keelErrorHandler(fallback: ErrorHandler): ErrorHandler {
  return function keelErrorHandler(error, request, reply) {
    const mapped = httpErrorFor(error)
    if (mapped === undefined) return fallback.call(this, error, request, reply)
    requestSpans.get(request)?.setErrorType(mapped.body.error.code)
    return reply.code(mapped.status).headers(mapped.headers).send(mapped.body)
  }
}
