import { LRUCache } from 'lru-cache'

// String literals (with '' escapes, E'' escapes), dollar-quoted bodies, and numbers that are not part
// of an identifier or a $n parameter. Good enough to keep values out of spans; not a SQL parser.
const LITERALS =
  /(?:[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$([A-Za-z_]*)\$[\s\S]*?\$\1\$|(?<![\w$])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w))/g

const cache = new LRUCache<string, string>({ max: 1_000 })

/** The statement with literal values replaced by `?`; memoized, since apps send few distinct SQL texts. */
export function sanitizeSql(text: string): string {
  let out = cache.get(text)
  if (out === undefined) {
    out = text.replace(LITERALS, '?')
    cache.set(text, out)
  }
  return out
}

const OPERATION = /^\s*(?:--[^\n]*\n\s*|\/\*[\s\S]*?\*\/\s*)*([A-Za-z]+)/

/** The statement's leading keyword, upper-cased: SELECT, INSERT, WITH, ... */
export function operationName(text: string): string {
  const match = OPERATION.exec(text)
  return match?.[1] === undefined ? 'UNKNOWN' : match[1].toUpperCase()
}
