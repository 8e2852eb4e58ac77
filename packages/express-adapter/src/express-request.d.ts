// The one declaration of what @keel/express adds to Express's Request (ADR 0028). It is its own file,
// shipped as dist/express-request.d.ts and referenced by both index.d.ts and index.d.cts, so a project
// mixing ESM and CommonJS files sees it once: inlined into each entry, the two copies named two
// different TenantClient types (TS2717). As a .d.ts of a "type": "module" package it always resolves
// @keel/core's ESM declarations.
import type { Keel, TenantClient } from '@keel/core'

declare global {
  namespace Express {
    interface Request {
      /**
       * This request's tenant client. On a route keelExpress() does not cover (mounted elsewhere, or
       * before the middleware) reading it throws KEEL_NO_TENANT_CONTEXT; `keel.maybeCurrent()` tells
       * whether there is one.
       */
      db: TenantClient
      /** The keel instance the middleware was created with. */
      keel: Keel
    }
  }
}
