import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { errorCodes, KeelError } from '../src/index.js'
import { repoRoot } from './support/stack.js'

describe('error codes', () => {
  const doc = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8')
  const documented = new Set([...doc.matchAll(/^\| `(KEEL_[A-Z_]+)` \|/gm)].map((m) => m[1]))

  it.each(Object.keys(errorCodes))('%s is documented in docs/errors.md', (code) => {
    expect(documented.has(code)).toBe(true)
  })

  it('documents no code that does not exist', () => {
    expect([...documented].filter((c) => !(c! in errorCodes))).toEqual([])
  })

  it('every code raised anywhere in the source is declared', () => {
    const raised = new Set<string>()
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name)
        if (entry.isDirectory()) walk(path)
        else if (path.endsWith('.ts'))
          for (const m of readFileSync(path, 'utf8').matchAll(/'(KEEL_[A-Z_]+)'/g)) raised.add(m[1]!)
      }
    }
    walk(join(repoRoot, 'packages/core/src'))
    expect([...raised].filter((c) => !(c in errorCodes))).toEqual([])
  })

  it('KeelError carries code, details and cause', () => {
    const cause = new Error('underlying')
    const e = new KeelError('KEEL_TENANT_BUSY', 'busy', { cause, details: { tenantId: 'a' } })
    expect(e).toBeInstanceOf(Error)
    expect(e.name).toBe('KeelError')
    expect(e.code).toBe('KEEL_TENANT_BUSY')
    expect(e.cause).toBe(cause)
    expect(Object.isFrozen(e.details)).toBe(true)
  })
})
