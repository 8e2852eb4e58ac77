import { type FieldShape, ndjsonSelect, quoteIdent } from './ndjson-select.js'

/**
 * The `COPY (SELECT ...) TO STDOUT` that writes one table of db.export() (ADR 0044): Postgres writes
 * every byte of the output, keel only moves the bytes.
 *
 * - ndjson: the one text column of ndjsonSelect, in CSV format with a quote and a delimiter (\x01,
 *   \x02) that never occur in a line: CSV format then writes the column raw. (Text format would double
 *   every backslash of the JSON.) A line is JSON text from row_to_json, which escapes every control
 *   character, so no line holds CR, LF, \x01 or \x02 (test: stream-export-copy.test.ts).
 * - csv: CSV with a header, each column as the documented form (README "Types in exports"): COPY writes
 *   a column's text form, which already is that form except for booleans (t/f: cast to text gives
 *   true/false), bytea (\x hex: base64 instead) and timestamps (DateStyle's: to_json's ISO 8601 with a
 *   ±hh:mm offset). NULL is an empty field and the empty string "", records end with LF.
 */
export function copyStatement(
  table: string,
  format: 'ndjson' | 'csv',
  fields: readonly FieldShape[],
): string {
  if (format === 'ndjson') {
    return `COPY (${ndjsonSelect(table, fields)}) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')`
  }
  const columns = fields.map((field) => {
    const column = quoteIdent(field.name)
    return `${csvExpression(column, field.dataTypeID)} AS ${column}`
  })
  return `COPY (SELECT ${columns.join(', ')} FROM ${table}) TO STDOUT WITH (FORMAT csv, HEADER)`
}

function csvExpression(column: string, oid: number): string {
  if (oid === 16) return `${column}::text`
  if (oid === 17) return `translate(encode(${column}, 'base64'), E'\\n', '')`
  if (oid === 1114 || oid === 1184) return `to_json(${column}) #>> '{}'`
  return column
}
