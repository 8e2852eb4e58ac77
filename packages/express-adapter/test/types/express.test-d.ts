// Pins what the README shows of @keel/express, from its built declarations. ADR 0029.
import type { Keel, TenantClient } from '@keel/core'
import { closeKeelWithServer, keelErrorHandler, keelExpress } from '@keel/express'
import type { ErrorRequestHandler, Request, RequestHandler } from 'express'
import { expectTypeOf, test } from 'vitest'

declare const keel: Keel

test('keelExpress, req.db, req.keel, the error handler', () => {
  expectTypeOf(keelExpress(keel, { tenant: 'header', health: true })).toEqualTypeOf<RequestHandler>()
  expectTypeOf(keelExpress).toBeCallableWith(keel, { tenant: { param: 'tenantId' } })
  expectTypeOf(keelExpress).toBeCallableWith(keel, { tenant: (req: Request) => req.get('x-org') })
  expectTypeOf(keelErrorHandler()).toEqualTypeOf<ErrorRequestHandler>()
  expectTypeOf(closeKeelWithServer).toBeFunction()
  // Whether req.db may be absent (routes the adapter skips) is issue #11's; what it holds is a TenantClient.
  expectTypeOf<NonNullable<Request['db']>>().toEqualTypeOf<TenantClient>()
  expectTypeOf<NonNullable<Request['keel']>>().toEqualTypeOf<Keel>()
})
