// The HTTP kit is a subpath for adapter authors; the root keeps what apps use (ADR 0029).
import * as root from '@keel/core'
import { type HttpErrorResponse, httpErrorFor, httpStatusFor } from '@keel/core'
import { type KeelHttpOptions, resolveHttpOptions, safeHttpError, tenantFromRequest } from '@keel/core/http'
import { expectTypeOf, test } from 'vitest'

test('the kit comes from @keel/core/http, not the root', () => {
  expectTypeOf(safeHttpError).returns.toEqualTypeOf<HttpErrorResponse>()
  expectTypeOf(resolveHttpOptions<{ headers: Record<string, string> }>)
    .parameter(0)
    .toEqualTypeOf<KeelHttpOptions<{ headers: Record<string, string> }>>()
  expectTypeOf(tenantFromRequest).toBeFunction()
  expectTypeOf(root).not.toHaveProperty('tenantFromRequest')
  expectTypeOf(root).not.toHaveProperty('HttpServerSpan')
  expectTypeOf(root).not.toHaveProperty('LIVENESS_BODY')
  expectTypeOf(root).not.toHaveProperty('resolveHttpOptions')
  expectTypeOf(httpStatusFor).returns.toEqualTypeOf<number | undefined>()
  expectTypeOf(httpErrorFor).returns.toEqualTypeOf<HttpErrorResponse | undefined>()
})
