import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { lintRules, lintSql } from '../src/index.js'
import { repoRoot } from './support.js'

const fixture = (name: string) => readFileSync(join(import.meta.dirname, 'fixtures/lint', name), 'utf8')

describe('lintSql', () => {
  it('flags every lock-taking or rewriting statement of a real first-draft migration, with its line', async () => {
    const findings = await lintSql(fixture('unsafe_orders.sql'))
    expect(findings.map((f) => [f.line, f.rule])).toEqual([
      [3, 'constraint-missing-not-valid'],
      [4, 'require-concurrent-index'],
      [5, 'set-not-null'],
      [6, 'alter-column-type'],
      [7, 'add-column-volatile-default'],
      [8, 'constraint-missing-not-valid'],
      [9, 'unique-constraint-without-index'],
      [10, 'rename-breaks-running-code'],
      [11, 'drop-breaks-running-code'],
    ])
    for (const f of findings) {
      expect(f.message.length).toBeGreaterThan(20)
      expect(f.fix.length).toBeGreaterThan(20)
    }
  })

  it('passes the safe version, tables created in the same file, and SQL inside strings and function bodies', async () => {
    expect(await lintSql(fixture('safe_orders.sql'))).toEqual([])
  })

  it('flags DDL in a hand-written transaction without lock_timeout, not the one that sets it', async () => {
    const findings = await lintSql(fixture('hand_written_tx.sql'))
    expect(findings.map((f) => [f.line, f.rule])).toEqual([[2, 'transaction-without-lock-timeout']])
  })

  it('honours -- keel:allow <rule> comments', async () => {
    const findings = await lintSql(fixture('allowed.sql'))
    expect(findings.map((f) => f.rule)).toEqual(['drop-breaks-running-code'])
  })

  it('flags an unnamed concurrent index (it cannot be resumed) and refuses SQL that does not parse', async () => {
    expect((await lintSql('CREATE INDEX CONCURRENTLY ON t (a);')).map((f) => f.rule)).toEqual([
      'concurrent-index-unnamed',
    ])
    await expect(lintSql('ALTER TABLE t ADD COLUMN;')).rejects.toMatchObject({
      code: 'KEEL_MIGRATION_INVALID',
    })
  })

  it('every rule is documented in docs/migrate.md with its id', () => {
    const doc = readFileSync(join(repoRoot, 'docs/migrate.md'), 'utf8')
    for (const rule of lintRules) expect(doc).toContain(`\`${rule.id}\``)
  })
})
