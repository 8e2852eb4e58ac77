// Keeps the old names of renamed codes on purpose: excluded from the rename sed of ADR 0029.
import { isKeelError, KeelError, type RenamedKeelErrorCode, renamedErrorCodes } from '@keel/core'
import { expectTypeOf, test } from 'vitest'

test('old names of renamed codes stay accepted where a code is asked about', () => {
  expectTypeOf<RenamedKeelErrorCode>().toEqualTypeOf<'KEEL_INVALID_TENANT' | 'KEEL_UNKNOWN_JOB'>()
  expectTypeOf(renamedErrorCodes.KEEL_INVALID_TENANT).toEqualTypeOf<'KEEL_TENANT_INVALID'>()
  const error = new KeelError('KEEL_TENANT_INVALID', 'x')
  expectTypeOf(isKeelError).toBeCallableWith(error, 'KEEL_INVALID_TENANT')
  expectTypeOf(error.is).toBeCallableWith('KEEL_UNKNOWN_JOB')
  // The raised code is the current name: comparing with an old one is a type error.
  // @ts-expect-error no overlap between KeelErrorCode and the old name
  if (error.code === 'KEEL_INVALID_TENANT') return
})
