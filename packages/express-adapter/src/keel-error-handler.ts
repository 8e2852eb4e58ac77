import { httpErrorFor } from '@keel/core'
import type { ErrorRequestHandler } from 'express'
import { responseSpans } from './request-span.js'
import { sendKeelError } from './send-keel-error.js'

/**
 * Error middleware answering a KeelError thrown by a route (e.g. KEEL_TENANT_BUSY: 503 + Retry-After)
 * with the adapters' JSON body. Register it after the routes, before the app's own error middleware:
 * anything else, and anything after headers went out, is passed on untouched.
 */
export function keelErrorHandler(): ErrorRequestHandler {
  return function keelErrorHandler(error, _req, res, next) {
    const mapped = httpErrorFor(error)
    if (mapped === undefined || res.headersSent) return next(error)
    responseSpans.get(res)?.setErrorType(mapped.body.error.code)
    sendKeelError(res, mapped)
  }
}
