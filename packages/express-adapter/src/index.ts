/**
 * @keel/express: Express 5 middleware giving each request a tenant-scoped `req.db`.
 * This release ships the package layout only; the middleware lands with the adapters issue (#6).
 */
export const packageName = '@keel/express'
