import type { HttpServerSpan } from '@keel/core/http'
import type { FastifyRequest } from 'fastify'

/**
 * The span of a request the plugin traces, so the error handler can name the KeelError code on it.
 * A WeakMap rather than a request decorator: it is internal, and request shapes stay as declared.
 */
export const requestSpans = new WeakMap<FastifyRequest, HttpServerSpan>()
