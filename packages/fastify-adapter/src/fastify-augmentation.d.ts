// The one declaration of what @keel/fastify adds to Fastify's types (ADR 0028). It is its own file,
// shipped as dist/fastify-augmentation.d.ts and referenced by both index.d.ts and index.d.cts, so a
// project mixing ESM and CommonJS files sees it once: inlined into each entry, the two copies named two
// different TenantClient types (TS2717). As a .d.ts of a "type": "module" package it always resolves
// @keel/core's ESM declarations.
import type { Keel, TenantClient } from '@keel/core'

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * This request's tenant client. On a route the plugin does not cover (health, 404, `keel: false`)
     * reading it throws KEEL_NO_TENANT_CONTEXT; `keel.maybeCurrent()` tells whether there is one.
     */
    db: TenantClient
  }
  interface FastifyInstance {
    keel: Keel
  }
  interface FastifyContextConfig {
    /** `false`: this route needs no tenant (public pages, webhooks); request.db throws there. */
    keel?: false
  }
}
