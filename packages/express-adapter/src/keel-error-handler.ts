import { isKeelError } from '@keel/core'
import { safeHttpError } from '@keel/core/http'
import type { ErrorRequestHandler } from 'express'
import { responseSpans } from './request-span.js'
import { sendKeelError } from './send-keel-error.js'

/**
 * Error middleware answering every error a route throws with the adapters' JSON body: a KeelError by
 * its code (e.g. KEEL_TENANT_BUSY: 503 + Retry-After), a body parser's 4xx with its status, anything
 * else with a bare 500 (ADR 0026): Express's default handler would send an HTML page with the message,
 * the stack and file paths. Server errors that are not keel's go to keel's logger instead. Register it
 * after the routes; an app that wants its own handling registers its error middleware before this one.
 * Once headers went out, the error is passed on (Express then closes the connection).
 */
export function keelErrorHandler(): ErrorRequestHandler {
  return function keelErrorHandler(error, req, res, next) {
    if (res.headersSent) return next(error)
    const mapped = safeHttpError(error)
    if (mapped.status >= 500 && !isKeelError(error)) {
      ;(req.keel as typeof req.keel | undefined)?.config.logger?.error(
        { err: error, method: req.method, url: req.originalUrl },
        'keel express: a route failed',
      )
    }
    responseSpans.get(res)?.setErrorType(mapped.body.error.code)
    sendKeelError(res, mapped)
  }
}
