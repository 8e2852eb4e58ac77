import { STATUS_CODES } from 'node:http'
import { type HttpErrorResponse, httpErrorFor } from './http-error.js'

const INTERNAL: HttpErrorResponse = {
  status: 500,
  headers: {},
  body: { error: { code: 'INTERNAL_ERROR', message: 'Internal Server Error' } },
}

/**
 * What an adapter answers for ANY error a route throws (ADR 0026): a KeelError as httpErrorFor() maps
 * it; a client error of the framework or a body parser (`status`/`statusCode` 4xx) keeps its status,
 * with its message only where the error itself says the message is about the request (http-errors'
 * `expose`, Fastify's schema `validation`), else the status's reason phrase; anything else (a Postgres
 * error, a plain Error) is a 500 whose body says nothing more. Messages, stacks, SQL and file paths of
 * server errors never reach a client: they go to the app's logger.
 */
export function safeHttpError(error: unknown): HttpErrorResponse {
  const mapped = httpErrorFor(error)
  if (mapped !== undefined) return mapped
  const e = error as {
    status?: unknown
    statusCode?: unknown
    expose?: unknown
    validation?: unknown
    message?: unknown
  } | null
  const status = e?.status ?? e?.statusCode
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 499) return INTERNAL
  const exposed =
    (e?.expose === true || Array.isArray(e?.validation)) && typeof e?.message === 'string'
      ? e.message
      : undefined
  return {
    status,
    headers: {},
    body: { error: { code: 'REQUEST_INVALID', message: exposed ?? STATUS_CODES[status] ?? 'Bad Request' } },
  }
}
