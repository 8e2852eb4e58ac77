import { existsSync, readFileSync, writeFileSync } from 'node:fs'

/** Plain markdown tables, padded so they read well in a terminal too. */
export function markdownTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  rightAlign: readonly boolean[] = [],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const cell = (text: string, i: number) =>
    rightAlign[i] ? text.padStart(widths[i]!) : text.padEnd(widths[i]!)
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => cell(c, i)).join(' | ')} |`
  // Biome's markdown formatting: `| --- | --: |`, each rule as wide as its column.
  const rule = `| ${widths.map((w, i) => (rightAlign[i] ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`
  return [line(headers), rule, ...rows.map(line)].join('\n')
}

export function fmt(value: number | undefined, digits = 2): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a'
  return value.toFixed(digits)
}

export function fmtInt(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a'
  return Math.round(value).toLocaleString('en-US')
}

export function fmtRatio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : `${value.toFixed(2)}x`
}

export function fmtPct(value: number | undefined, digits = 1): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : `${(value * 100).toFixed(digits)} %`
}

/**
 * Replaces what lies between two marker lines of a file (a README section refreshed by a run).
 * Returns false, leaving the file alone, when either marker is missing.
 */
export function replaceBetweenMarkers(file: string, start: string, end: string, content: string): boolean {
  if (!existsSync(file)) return false
  const text = readFileSync(file, 'utf8')
  const i = text.indexOf(start)
  const j = text.indexOf(end)
  if (i < 0 || j < i) return false
  writeFileSync(file, `${text.slice(0, i + start.length)}\n${content}${text.slice(j)}`)
  return true
}
