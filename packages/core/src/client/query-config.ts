import { KeelError } from '../errors.js'
import type { RowShape } from '../pool/scoped-query.js'
import type { CustomTypesConfig, QueryConfig } from './query-types.js'

/** One statement as keel runs it: the text, its values, and how pg is to build its rows. */
export interface Statement {
  readonly text: string
  readonly values: readonly unknown[] | undefined
  readonly shape: RowShape | undefined
}

// pg QueryConfig keys that change what pg does on the wire in ways keel's one-round-trip batch cannot
// honour: refused rather than silently ignored.
const UNSUPPORTED: Readonly<Record<string, string>> = {
  binary: 'binary results (binary: true) are not supported; keel asks for text results',
  rows: 'portal paging (rows) is not supported outside a cursor; use db.stream() or a cursor in db.transaction()',
  portal: 'named portals (portal) are not supported',
  callback: 'a callback inside the QueryConfig is not supported by db.query(); it returns a promise',
}

/**
 * The statement of a `query(textOrConfig, values?)` call: the text or pg's QueryConfig
 * (`{ text, values, rowMode, types, name }`), checked for shape (KEEL_QUERY_INVALID otherwise).
 * `values` passed as the second argument win over the config's, as in pg. `name` is ignored: keel
 * prepares and caches statements per connection under names of its own (ADR 0031).
 */
export function toStatement(textOrConfig: unknown, values: unknown): Statement {
  if (typeof textOrConfig === 'string')
    return { text: textOrConfig, values: checkValues(values), shape: undefined }
  if (textOrConfig === null || typeof textOrConfig !== 'object' || Array.isArray(textOrConfig)) {
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      'query() takes the SQL text or a pg QueryConfig ({ text, values })',
    )
  }
  const config = textOrConfig as Partial<QueryConfig> & Record<string, unknown>
  if (typeof config.submit === 'function') {
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      'a pg Submittable (pg-cursor, pg-query-stream, a pg.Query) cannot run through keel; use db.stream() or a cursor inside db.transaction()',
    )
  }
  if (typeof config.text !== 'string') {
    throw new KeelError('KEEL_QUERY_INVALID', 'a QueryConfig needs `text`, the SQL string', {
      details: { got: typeof config.text },
    })
  }
  for (const [key, why] of Object.entries(UNSUPPORTED)) {
    const value = config[key]
    if (value !== undefined && value !== false && value !== 0 && value !== '') {
      throw new KeelError('KEEL_QUERY_INVALID', why, { details: { option: key } })
    }
  }
  if (config.queryMode !== undefined && config.queryMode !== 'extended') {
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      "queryMode 'simple' (several statements in one string) is not supported; keel always uses the extended protocol",
      { details: { option: 'queryMode' } },
    )
  }
  if (config.name !== undefined && typeof config.name !== 'string') {
    throw new KeelError('KEEL_QUERY_INVALID', 'QueryConfig.name must be a string', {
      details: { option: 'name' },
    })
  }
  const rowMode = config.rowMode
  if (rowMode !== undefined && rowMode !== 'array') {
    throw new KeelError('KEEL_QUERY_INVALID', "QueryConfig.rowMode must be 'array' or absent", {
      details: { option: 'rowMode' },
    })
  }
  const types = config.types
  if (
    types !== undefined &&
    (types === null || typeof (types as CustomTypesConfig).getTypeParser !== 'function')
  ) {
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      'QueryConfig.types must be an object with getTypeParser(oid, format)',
      {
        details: { option: 'types' },
      },
    )
  }
  const params = checkValues(values ?? config.values)
  const shape = rowMode === undefined && types === undefined ? undefined : { rowMode, types }
  return { text: config.text, values: params, shape }
}

function checkValues(values: unknown): readonly unknown[] | undefined {
  if (values === undefined || values === null) return undefined
  if (!Array.isArray(values)) throw new KeelError('KEEL_QUERY_INVALID', 'query values must be an array')
  return values
}
