/**
 * One CSV record (RFC 4180): fields joined by commas, a field quoted when it holds a comma, a quote, CR
 * or LF (quotes doubled), lines ended by CRLF. NULL is an empty field and the empty string a quoted
 * empty field (as Postgres' COPY ... CSV writes them); json values are written as their JSON text.
 */
export function csvLine(values: readonly unknown[]): string {
  let line = ''
  for (let i = 0; i < values.length; i++) {
    if (i > 0) line += ','
    line += csvField(values[i])
  }
  return `${line}\r\n`
}

function csvField(value: unknown): string {
  if (value === null || value === undefined) return ''
  const text =
    typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value)
  if (text === '' || /[",\r\n]/.test(text)) return `"${text.replaceAll('"', '""')}"`
  return text
}
