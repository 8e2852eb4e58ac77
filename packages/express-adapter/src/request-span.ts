import type { HttpServerSpan } from '@keel/core/http'
import type { Response } from 'express'

/**
 * The span of a response the middleware traces, so keelErrorHandler() can name the KeelError code on
 * it. A WeakMap rather than a property: nothing is added to the app's objects.
 */
export const responseSpans = new WeakMap<Response, HttpServerSpan>()
