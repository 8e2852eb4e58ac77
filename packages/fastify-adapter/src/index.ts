/**
 * @keel/fastify: a Fastify 5 plugin giving each request a tenant-scoped `request.db`.
 * Guide: docs/adapters.md.
 */
export { keelErrorHandler, safeErrorHandler } from './keel-error-handler.js'
export type { KeelFastifyOptions } from './keel-fastify.js'
export { keelFastify, keelFastify as default } from './keel-fastify.js'
