// Pins what the README shows of @keel/fastify, from its built declarations. ADR 0029.
import type { Keel, TenantClient } from '@keel/core'
import { keelFastify } from '@keel/fastify'
import Fastify, { type FastifyRequest } from 'fastify'
import { expectTypeOf, test } from 'vitest'

declare const keel: Keel

test('register keelFastify, request.db', async () => {
  const app = Fastify()
  await app.register(keelFastify, { keel, tenant: 'header', health: true })
  // @ts-expect-error keel is required
  await app.register(keelFastify, { tenant: 'header' })
  // Whether request.db may be absent (routes the adapter skips) is issue #11's; what it holds is a TenantClient.
  expectTypeOf<NonNullable<FastifyRequest['db']>>().toEqualTypeOf<TenantClient>()
})
