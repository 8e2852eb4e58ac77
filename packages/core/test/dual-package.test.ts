import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'

/**
 * The ESM and CJS builds each define a KeelError class; an app that mixes both (or an adapter resolved
 * to the other format) must still recognise keel's errors: the HTTP status of a KEEL_TENANT_BUSY thrown
 * by one copy, read by the other, is 503, not undefined (issue #11, the dual-package hazard).
 * Runs against the built packages (npm test builds them first).
 */
type Core = typeof import('../src/index.js')

const require = createRequire(import.meta.url)
const cjs = require('../dist/index.cjs') as Core
// A path held in a variable: type-checking must not depend on the build being there.
const esmBuild = '../dist/index.js'
const esm = (await import(esmBuild)) as Core

describe('one KeelError identity across the ESM and CJS builds', () => {
  it('isKeelError, instanceof and httpStatusFor recognise the other build’s errors', () => {
    expect(cjs.KeelError).not.toBe(esm.KeelError)
    const fromEsm = new esm.KeelError('KEEL_TENANT_BUSY', 'busy')
    const fromCjs = new cjs.KeelError('KEEL_CLOSED', 'closed')
    expect(cjs.isKeelError(fromEsm, 'KEEL_TENANT_BUSY')).toBe(true)
    expect(esm.isKeelError(fromCjs, 'KEEL_CLOSED')).toBe(true)
    expect(fromEsm instanceof cjs.KeelError).toBe(true)
    expect(cjs.httpStatusFor(fromEsm)).toBe(503)
    expect(esm.httpStatusFor(fromCjs)).toBe(503)
  })

  it('is not fooled by a plain error or an object that only looks like one', () => {
    const lookalike = Object.assign(new Error('x'), { name: 'KeelError', code: 'KEEL_CLOSED' })
    expect(esm.isKeelError(lookalike)).toBe(false)
    expect(cjs.isKeelError({ code: 'KEEL_CLOSED' })).toBe(false)
    expect(esm.isKeelError(null)).toBe(false)
  })
})
