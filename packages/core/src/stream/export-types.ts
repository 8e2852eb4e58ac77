/**
 * The reference for how db.export() writes Postgres values (docs: README "Streaming reads and export"),
 * as the client-side parsers the cursor-based export used; Postgres now writes them itself (COPY,
 * copy-statement.ts) and the export tests compare its output with these forms: exact and
 * portable rather than JavaScript's native types. bigint and numeric stay strings (no float rounding),
 * timestamps ISO 8601 with Postgres' own precision (microseconds, the offset as ±hh:mm), json/jsonb as
 * JSON, bytea as base64, booleans and 2/4-byte integers as JSON booleans and numbers, floats as numbers
 * (NaN and ±Infinity as strings). Everything else (text, date, uuid, interval, arrays, ...) is Postgres'
 * text form.
 */
const PARSERS: Record<number, (text: string) => unknown> = {
  16: (text) => text === 't',
  21: Number,
  23: Number,
  26: Number,
  700: float,
  701: float,
  114: (text) => JSON.parse(text),
  3802: (text) => JSON.parse(text),
  17: bytea,
  1114: timestamp,
  1184: timestamp,
}

const asText = (text: string): string => text

/** pg's per-query `types` for export batches. */
export const EXPORT_TYPES = {
  getTypeParser(oid: number): (text: string) => unknown {
    return PARSERS[oid] ?? asText
  },
}

function float(text: string): number | string {
  const n = Number(text)
  return Number.isFinite(n) ? n : text
}

function bytea(text: string): string {
  // bytea_output 'hex' (the default since Postgres 9.0): \x followed by hex digits.
  if (text.startsWith('\\x')) return Buffer.from(text.slice(2), 'hex').toString('base64')
  return Buffer.from(text, 'latin1').toString('base64')
}

/** '2026-12-02 07:00:00.123456+00' -> '2026-12-02T07:00:00.123456+00:00'; 'infinity' stays. */
function timestamp(text: string): string {
  const iso = text.replace(' ', 'T')
  return /[+-]\d\d$/.test(iso) ? `${iso}:00` : iso
}
