/**
 * @keel/express: Express 5 middleware giving each request a tenant-scoped `req.db`.
 * Guide: docs/adapters.md.
 */
export { closeKeelWithServer } from './close-keel-with-server.js'
export { keelErrorHandler } from './keel-error-handler.js'
export type { KeelExpressOptions } from './keel-express.js'
export { keelExpress } from './keel-express.js'
