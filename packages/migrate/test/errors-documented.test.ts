import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { MigrateError, migrateErrorCodes } from '../src/index.js'
import { packageRoot, repoRoot } from './support.js'

describe('@keel/migrate error codes', () => {
  const doc = readFileSync(join(repoRoot, 'docs/migrate.md'), 'utf8')
  const documented = new Set([...doc.matchAll(/^\| `(KEEL_[A-Z_]+)` \|/gm)].map((m) => m[1]))

  it.each(Object.keys(migrateErrorCodes))('%s is documented in docs/migrate.md', (code) => {
    expect(documented.has(code)).toBe(true)
  })

  it('documents no code that does not exist', () => {
    expect([...documented].filter((c) => !(c! in migrateErrorCodes))).toEqual([])
  })

  it('every code raised in the source is declared', () => {
    const raised = new Set<string>()
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name)
        if (entry.isDirectory()) walk(path)
        else if (path.endsWith('.ts'))
          for (const m of readFileSync(path, 'utf8').matchAll(/'(KEEL_MIGRAT[A-Z_]+)'/g)) raised.add(m[1]!)
      }
    }
    walk(join(packageRoot, 'src'))
    expect(raised.size).toBeGreaterThan(5)
    expect([...raised].filter((c) => !(c in migrateErrorCodes))).toEqual([])
  })

  it('MigrateError carries code, details and cause', () => {
    const cause = new Error('under')
    const e = new MigrateError('KEEL_MIGRATION_FAILED', 'x', { cause, details: { tenant: 'a' } })
    expect(e.code).toBe('KEEL_MIGRATION_FAILED')
    expect(e.cause).toBe(cause)
    expect(Object.isFrozen(e.details)).toBe(true)
  })
})
