import { KeelError, type TenantClient } from '@keel/core'
import express from 'express'

let installed = false

/**
 * Makes `req.db` honest on every route: Express's request prototype gets a `db` accessor that throws
 * KEEL_NO_TENANT_CONTEXT until keelExpress() sets the request's client (the setter makes it a plain
 * property of that request). `express.request` is the prototype Express documents for extending; the
 * declaration (express-request.d.ts) already says every Request has a `db`, and now every one does.
 */
export function installRequestDb(): void {
  if (installed) return
  installed = true
  Object.defineProperty(express.request, 'db', {
    configurable: true,
    get(this: { method?: string; originalUrl?: string }): TenantClient {
      throw new KeelError(
        'KEEL_NO_TENANT_CONTEXT',
        `req.db was read on ${this.method ?? ''} ${this.originalUrl ?? ''}, a request keelExpress() did not give a tenant (a route outside its mount path, or registered before it)`,
        { details: { method: this.method, url: this.originalUrl } },
      )
    },
    set(this: object, db: TenantClient) {
      Object.defineProperty(this, 'db', { value: db, writable: true, enumerable: true, configurable: true })
    },
  })
}
