import { describe, expect, it } from 'vitest'
import {
  consistencyHeaders,
  consistencySetCookie,
  consistencyTokenFrom,
  resolveHttpOptions,
} from '../src/http/index.js'
import { errorCodes, httpErrorFor, httpStatusFor, KeelError } from '../src/index.js'

// The pieces the HTTP adapters share; the adapters' behaviour end to end is the conformance suite's.
describe('HTTP edge helpers', () => {
  it('maps every KeelError code to a status; anything else is not keel’s to map', () => {
    for (const code of Object.keys(errorCodes) as Array<keyof typeof errorCodes>) {
      expect(httpStatusFor(new KeelError(code, 'x'))).toBeGreaterThanOrEqual(400)
    }
    expect(httpStatusFor(new KeelError('KEEL_TENANT_INVALID', 'x'))).toBe(400)
    expect(httpStatusFor(new KeelError('KEEL_TENANT_UNKNOWN', 'x'))).toBe(404)
    expect(httpStatusFor(new KeelError('KEEL_TENANT_SCHEMA_UNKNOWN', 'x'))).toBe(404)
    for (const code of ['KEEL_TENANT_BUSY', 'KEEL_POOL_TIMEOUT', 'KEEL_CLOSED'] as const) {
      expect(httpStatusFor(new KeelError(code, 'x'))).toBe(503)
    }
    expect(httpStatusFor(new KeelError('KEEL_QUERY_INVALID', 'x'))).toBe(500)
    expect(httpStatusFor(new Error('x'))).toBeUndefined()
    expect(httpErrorFor(Object.assign(new Error('x'), { code: 'KEEL_CLOSED' }))).toBeUndefined()
  })

  it('Retry-After is whole seconds, rounded up, at least 1', () => {
    const busy = (retryAfterMs?: number) =>
      httpErrorFor(new KeelError('KEEL_TENANT_BUSY', 'busy', { details: { retryAfterMs } }))?.headers[
        'retry-after'
      ]
    expect(busy(1_000)).toBe('1')
    expect(busy(1_001)).toBe('2')
    expect(busy(0)).toBe('1')
    expect(busy(undefined)).toBe('1')
    expect(httpErrorFor(new KeelError('KEEL_CLOSED', 'closed'))?.headers).toEqual({})
  })

  it('4xx bodies carry the message; 5xx bodies only the code’s fixed description', () => {
    const invalid = new KeelError('KEEL_TENANT_INVALID', 'tenant id "a;b" is not allowed')
    expect(httpErrorFor(invalid)?.body).toEqual({
      error: { code: 'KEEL_TENANT_INVALID', message: 'tenant id "a;b" is not allowed' },
    })
    const timeout = new KeelError('KEEL_POOL_TIMEOUT', 'no connection to 10.0.0.7:5432 within 5000 ms')
    expect(httpErrorFor(timeout)?.body.error.message).toBe(errorCodes.KEEL_POOL_TIMEOUT)
  })

  it('options: defaults, and KEEL_CONFIG_INVALID naming every bad field', () => {
    const resolved = resolveHttpOptions({ tenant: 'header' })
    expect(resolved).toMatchObject({
      consistencyHeader: 'keel-consistency',
      cookie: undefined,
      liveness: undefined,
      readiness: undefined,
      tracing: true,
    })
    expect(Object.isFrozen(resolved)).toBe(true)
    expect(resolveHttpOptions({ tenant: 'header', health: true })).toMatchObject({
      liveness: '/healthz',
      readiness: '/readyz',
    })
    expect(() =>
      resolveHttpOptions({
        tenant: { param: '' },
        consistency: { header: 'bad header', cookie: { sameSite: 'loose' as 'lax' } },
        health: { liveness: 'healthz' },
      }),
    ).toThrow(
      expect.objectContaining({
        code: 'KEEL_CONFIG_INVALID',
        details: {
          fields: ['tenant', 'consistency.header', 'consistency.cookie.sameSite', 'health.liveness'],
        },
      }),
    )
  })

  it('the token comes from the header, else the cookie; Set-Cookie has the configured attributes', () => {
    const options = resolveHttpOptions({ tenant: 'header', consistency: { cookie: { name: 'kc' } } })
    expect(consistencyTokenFrom(options, { 'keel-consistency': 'h', cookie: 'kc=c' })).toBe('h')
    expect(consistencyTokenFrom(options, { cookie: 'a=1; kc=k1.x%2F1; b=2' })).toBe('k1.x/1')
    expect(consistencyTokenFrom(options, { cookie: 'kc=%E0' })).toBe('%E0')
    expect(consistencyTokenFrom(options, {})).toBeUndefined()
    expect(consistencySetCookie(options.cookie!, 'k1.x/1', false)).toBe(
      'kc=k1.x%2F1; Path=/; Max-Age=300; SameSite=Lax; HttpOnly',
    )
    expect(consistencySetCookie(options.cookie!, 't', true)).toMatch(/; Secure$/)
    expect(consistencyHeaders(options, { consistencyToken: undefined }, false)).toEqual([])
    expect(consistencyHeaders(options, null, false)).toEqual([])
    expect(consistencyHeaders(options, { consistencyToken: 't' }, false)).toEqual([
      ['keel-consistency', 't'],
      ['set-cookie', 'kc=t; Path=/; Max-Age=300; SameSite=Lax; HttpOnly'],
    ])
    const none = resolveHttpOptions({ tenant: 'header', consistency: { cookie: { sameSite: 'none' } } })
    expect(consistencySetCookie(none.cookie!, 't', false)).toMatch(/SameSite=None; HttpOnly; Secure$/)
  })
})
