/**
 * The SELECT that makes Postgres write export's ndjson lines itself (ADR 0042, amended): one text
 * column per row, `{"table":<name>,"row":<row_to_json of the row>}`, with each column cast so the JSON
 * is the documented form that EXPORT_TYPES gives on the client (export-types.ts): bigint and numeric as
 * strings, bytea as base64, oid as a number, anything without a JSON form of its own (dates, uuids,
 * intervals, arrays, enums, composites, ...) as its text form; booleans, 2/4-byte integers, floats
 * (NaN and ±Infinity as strings), json/jsonb and timestamps (ISO 8601, ±hh:mm offset) are what
 * row_to_json writes already. Serializing in the server's C code instead of parsing every value into
 * JavaScript and JSON.stringify-ing it again is what brings the export near a raw COPY. The SELECT
 * runs inside `COPY (...) TO STDOUT` (ADR 0044, copy-statement.ts): every line is one JSON text without
 * a raw control character (row_to_json escapes them in strings; json's own whitespace is made spaces).
 */
const AS_IS = new Set([16, 21, 23, 700, 701, 3802, 1114, 1184])

export interface FieldShape {
  readonly name: string
  readonly dataTypeID: number
}

export function ndjsonSelect(table: string, fields: readonly FieldShape[]): string {
  const columns = fields.map((field) => {
    const column = quoteIdent(field.name)
    return `${columnExpression(column, field.dataTypeID)} AS ${column}`
  })
  // The table name is a checked identifier ([A-Za-z_][A-Za-z0-9_]*): as JSON and as SQL text it needs no escaping.
  const prefix = `'{"table":"${table}","row":'`
  return `SELECT ${prefix} || row_to_json(keel_row)::text || '}' FROM (SELECT ${columns.join(', ')} FROM ${table}) AS keel_row`
}

function columnExpression(column: string, oid: number): string {
  // json keeps its input text, whose whitespace may hold raw CR/LF: outside a string (where JSON has no
  // raw control characters) they are only whitespace, so a space keeps the value and the line one line.
  if (oid === 114) return `replace(replace(${column}::text, E'\\r', ' '), E'\\n', ' ')::json`
  if (AS_IS.has(oid)) return column
  if (oid === 17) return `translate(encode(${column}, 'base64'), E'\\n', '')`
  if (oid === 26) return `${column}::int8`
  // char(n): a cast to text drops the padding its text form has; concat() calls the output function.
  if (oid === 1042) return `CASE WHEN ${column} IS NULL THEN NULL ELSE concat(${column}) END`
  return `${column}::text`
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}
