// Keeps the old names of renamed codes on purpose: excluded from the rename sed of ADR 0029.
import { describe, expect, it } from 'vitest'
import {
  currentErrorCode,
  errorCodes,
  httpErrorFor,
  httpStatusFor,
  isKeelError,
  KeelError,
  renamedErrorCodes,
} from '../src/index.js'

const BRAND = Symbol.for('keel.KeelError')

/** A KeelError as an older copy of keel (another installed version) would raise it: the old code. */
function fromOlderCopy(code: string): Error {
  return Object.assign(new Error('from an older keel'), {
    name: 'KeelError',
    code,
    details: {},
    [BRAND]: true,
  })
}

describe('renamed error codes (ADR 0029)', () => {
  it.each(Object.entries(renamedErrorCodes))(
    '%s is raised as %s and still matches its old name',
    (old, current) => {
      const error = new KeelError(old as keyof typeof renamedErrorCodes, 'x')
      expect(error.code).toBe(current)
      expect(error.is(old as keyof typeof renamedErrorCodes)).toBe(true)
      expect(error.is(current as never)).toBe(true)
      expect(isKeelError(error, old as keyof typeof renamedErrorCodes)).toBe(true)
      expect(isKeelError(error, current as never)).toBe(true)
      expect(currentErrorCode(old)).toBe(current)
      expect(errorCodes).toHaveProperty(old)
      expect(errorCodes).toHaveProperty(current)
    },
  )

  it('matches no other code under either name', () => {
    const error = new KeelError('KEEL_TENANT_INVALID', 'x')
    expect(error.is('KEEL_TENANT_BUSY')).toBe(false)
    expect(isKeelError(error, 'KEEL_UNKNOWN_JOB')).toBe(false)
    expect(isKeelError(new Error('x'), 'KEEL_INVALID_TENANT')).toBe(false)
    expect(currentErrorCode('KEEL_TENANT_BUSY')).toBe('KEEL_TENANT_BUSY')
    expect(currentErrorCode('not a code')).toBe('not a code')
  })

  it("an older copy's error under the old name matches the new name and is answered under it", () => {
    const old = fromOlderCopy('KEEL_INVALID_TENANT')
    expect(isKeelError(old, 'KEEL_TENANT_INVALID')).toBe(true)
    expect(httpStatusFor(old)).toBe(400)
    expect(httpErrorFor(old)?.body.error.code).toBe('KEEL_TENANT_INVALID')
    expect(httpStatusFor(fromOlderCopy('KEEL_UNKNOWN_JOB'))).toBe(500)
  })
})
