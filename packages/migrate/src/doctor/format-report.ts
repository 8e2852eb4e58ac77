import type { DoctorResult } from './doctor.js'

/** The report for people: one block per finding, errors first, then a summary line. */
export function formatReport(result: DoctorResult): string {
  const lines: string[] = []
  for (const f of result.findings) {
    lines.push(`${f.severity === 'error' ? 'ERROR  ' : 'warning'} ${f.rule}  ${f.object}`)
    lines.push(`  ${f.message}`)
    lines.push(`  fix: ${f.fix}`)
    lines.push(`  see: docs/doctor/${f.rule}.md`)
    lines.push('')
  }
  const errors = result.findings.filter((f) => f.severity === 'error').length
  const warnings = result.findings.length - errors
  const c = result.checked
  const probe = result.probe.ran
    ? `probe ran on ${c.probedTables} table(s)`
    : `probe skipped: ${result.probe.reason}`
  lines.push(
    `keel doctor: ${errors} error(s), ${warnings} warning(s); checked ${c.databases} database(s), ${c.schemas} schema(s), ${c.tables} table(s) (${c.tenantTables} tenant); ${probe}`,
  )
  return `${lines.join('\n')}\n`
}
