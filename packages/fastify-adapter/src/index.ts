/**
 * @keel/fastify: a Fastify 5 plugin giving each request a tenant-scoped `request.db`.
 * This release ships the package layout only; the plugin lands with the adapters issue (#6).
 */
export const packageName = '@keel/fastify'
