import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { doctorRules } from '../../src/index.js'

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../../..')
const codes = ['KEEL_DOCTOR_CONFIG_INVALID', 'KEEL_DOCTOR_ROLE_UNKNOWN'] as const

describe('doctor documentation', () => {
  // Documented with the doctor: docs/errors.md's table holds @keel/core's codes only (a core test checks).
  const index = readFileSync(join(repoRoot, 'docs/doctor/README.md'), 'utf8')
  it.each(codes)('%s is documented in docs/doctor/README.md', (code) => {
    expect(index).toContain(`| \`${code}\` |`)
  })

  it.each(Object.keys(doctorRules))('rule %s has its page (why, fix) and a row in the index', (rule) => {
    const page = readFileSync(join(repoRoot, `docs/doctor/${rule}.md`), 'utf8')
    expect(page).toContain('## Why it matters')
    expect(page).toContain('## Fix')
    expect(page).toContain(`Severity: **${doctorRules[rule as keyof typeof doctorRules][0]}`)
    expect(index).toContain(`[\`${rule}\`](${rule}.md)`)
  })
})
