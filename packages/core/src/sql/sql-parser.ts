import { loadModule, parseSync } from 'libpg-query'
import { KeelError } from '../errors.js'

let loading: Promise<void> | undefined
let loaded = false

/**
 * Loads Postgres' own parser (libpg-query, WebAssembly: no native build) once per process. createKeel
 * starts it; the first statement awaits it. After that, `parserLoaded()` is a boolean check.
 */
export function loadParser(): Promise<void> {
  loading ??= loadModule().then(
    () => {
      loaded = true
    },
    (error: unknown) => {
      loading = undefined
      throw new KeelError('KEEL_PARSER_UNAVAILABLE', "keel could not load Postgres' SQL parser", {
        cause: error,
      })
    },
  )
  return loading
}

export function parserLoaded(): boolean {
  return loaded
}

/** A parse tree as libpg-query returns it: JSON objects keyed by node type. */
export type ParseNode = Record<string, unknown>

/** The statements of `text`, or undefined when Postgres' grammar does not accept it. */
export function parseStatements(text: string): ParseNode[] | undefined {
  // A class computed without the parser would be cached as if the text did not parse: refuse instead.
  if (!loaded)
    throw new KeelError('KEEL_PARSER_UNAVAILABLE', 'the SQL parser is not loaded yet (await loadParser())')
  try {
    const tree = parseSync(text) as { stmts?: Array<{ stmt?: ParseNode }> }
    return (tree.stmts ?? []).map((s) => s.stmt ?? {})
  } catch {
    return undefined
  }
}
