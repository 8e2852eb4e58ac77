import { afterAll, describe, expect, it } from 'vitest'
import { createKeel, KeelError } from '../src/index.js'

// Unreachable on purpose: every id below must be refused before anything is sent.
const keel = createKeel({ postgres: { primary: { connectionString: 'postgres://u@127.0.0.1:1/db' } } })
afterAll(() => keel.close())

describe('keel.tenant(id)', () => {
  it.each([
    ['empty', ''],
    ['too long', 'a'.repeat(64)],
    ['SQL fragment', "acme'; DROP TABLE invoices; --"],
    ['quote', 'ac"me'],
    ['space', 'ac me'],
    ['newline (log forging)', 'acme\nlevel=admin'],
    ['NUL', 'acme\u0000'],
    ['tab', 'acme\t'],
    ['DEL', 'acme\u007f'],
    ['backslash', 'acme\\'],
    ['dot', 'acme.corp'],
    ['unicode lookalike', 'аcme'],
    ['percent', 'acme%'],
  ])('refuses %s with KEEL_TENANT_INVALID', (_name, id) => {
    expect(() => keel.tenant(id)).toThrow(KeelError)
    try {
      keel.tenant(id)
    } catch (error) {
      expect((error as KeelError).code).toBe('KEEL_TENANT_INVALID')
    }
  })

  it.each([null, undefined, 42, {}, ['acme']])('refuses a non-string id (%s)', (id) => {
    expect(() => keel.tenant(id as never)).toThrow(expect.objectContaining({ code: 'KEEL_TENANT_INVALID' }))
  })

  it.each(['acme', 'a', 'A-b_9', 'x'.repeat(63), '550e8400-e29b-41d4-a716-446655440000'])(
    'accepts %s',
    (id) => {
      expect(keel.tenant(id).tenantId).toBe(id)
    },
  )

  it('uses the configured pattern, and never lets it widen past forbidden characters', async () => {
    const strict = createKeel({
      postgres: { primary: { connectionString: 'postgres://u@127.0.0.1:1/db' } },
      tenants: { idPattern: /^t\d+$/g },
    })
    expect(strict.tenant('t1').tenantId).toBe('t1')
    // A /g pattern keeps lastIndex between calls; the same id must pass twice.
    expect(strict.tenant('t1').tenantId).toBe('t1')
    expect(() => strict.tenant('acme')).toThrow(expect.objectContaining({ code: 'KEEL_TENANT_INVALID' }))
    const loose = createKeel({
      postgres: { primary: { connectionString: 'postgres://u@127.0.0.1:1/db' } },
      tenants: { idPattern: /.*/ },
    })
    expect(() => loose.tenant("a'b")).toThrow(expect.objectContaining({ code: 'KEEL_TENANT_INVALID' }))
    await Promise.all([strict.close(), loose.close()])
  })
})
