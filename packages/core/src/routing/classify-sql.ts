import { LRUCache } from 'lru-cache'

export type StatementKind = 'read' | 'write'

// Leading keywords of statements that can only read.
const READ_LEADS = new Set(['SELECT', 'WITH', 'TABLE', 'VALUES', 'SHOW'])

// Anything here, outside literals and comments, sends the statement to the primary: data-modifying
// CTEs, row locks, SELECT INTO, sequence and advisory-lock functions, functions that need a
// transaction id or a primary (and fail on a standby), notifications, large objects.
const WRITE_MARKERS =
  /\b(?:INSERT|UPDATE|DELETE|MERGE|INTO|FOR\s+(?:NO\s+KEY\s+)?UPDATE|FOR\s+(?:KEY\s+)?SHARE|NEXTVAL|SETVAL|CURRVAL|LASTVAL|PG_(?:TRY_)?ADVISORY_\w*|PG_NOTIFY|TXID_CURRENT\w*|PG_CURRENT_XACT_ID\w*|PG_CURRENT_WAL\w*|LO_\w+|DBLINK\w*)\b/

const cache = new LRUCache<string, StatementKind>({ max: 2_000 })

/**
 * Strips what cannot carry meaning for routing: string literals ('' and E'' escapes), dollar-quoted
 * bodies, quoted identifiers and comments. Returns undefined when the text has more than one
 * statement or cannot be tokenized with confidence.
 */
function stripLiterals(text: string): string | undefined {
  let out = ''
  let i = 0
  const n = text.length
  let sawStatementEnd = false
  while (i < n) {
    const c = text[i]!
    const next = text[i + 1]
    if (c === '-' && next === '-') {
      const end = text.indexOf('\n', i)
      i = end < 0 ? n : end + 1
      out += ' '
    } else if (c === '/' && next === '*') {
      // Postgres block comments nest.
      let depth = 1
      i += 2
      while (i < n && depth > 0) {
        if (text[i] === '/' && text[i + 1] === '*') {
          depth++
          i += 2
        } else if (text[i] === '*' && text[i + 1] === '/') {
          depth--
          i += 2
        } else i++
      }
      if (depth > 0) return undefined
      out += ' '
    } else if (c === "'") {
      const escaped = i > 0 && (text[i - 1] === 'E' || text[i - 1] === 'e')
      i++
      while (i < n) {
        if (escaped && text[i] === '\\') i += 2
        else if (text[i] === "'" && text[i + 1] === "'") i += 2
        else if (text[i] === "'") break
        else i++
      }
      if (i >= n) return undefined
      i++
      out += " '' "
    } else if (c === '"') {
      const end = text.indexOf('"', i + 1)
      if (end < 0) return undefined
      i = end + 1
      out += ' _q_ '
    } else if (c === '$' && /[A-Za-z_$]/.test(next ?? '') && !/[\w$]/.test(text[i - 1] ?? '')) {
      const tagEnd = text.indexOf('$', i + 1)
      const tag = tagEnd < 0 ? '' : text.slice(i, tagEnd + 1)
      if (!/^\$[A-Za-z_]\w*\$$|^\$\$$/.test(tag)) {
        out += c
        i++
        continue
      }
      const close = text.indexOf(tag, tagEnd + 1)
      if (close < 0) return undefined
      i = close + tag.length
      out += " '' "
    } else if (c === '$' && next === '$') {
      const close = text.indexOf('$$', i + 2)
      if (close < 0) return undefined
      i = close + 2
      out += " '' "
    } else if (c === ';') {
      sawStatementEnd = true
      i++
    } else {
      if (sawStatementEnd && !/\s/.test(c)) return undefined
      out += c
      i++
    }
  }
  return out
}

/**
 * Conservatively classifies a statement: 'read' only when it certainly cannot write, take locks or
 * need the primary; everything uncertain is a 'write' and goes to the primary.
 */
export function classifySql(text: string): StatementKind {
  if (learnedWrites.has(text)) return 'write'
  let kind = cache.get(text)
  if (kind === undefined) {
    kind = classifyUncached(text)
    cache.set(text, kind)
  }
  return kind
}

function classifyUncached(text: string): StatementKind {
  const stripped = stripLiterals(text)
  if (stripped === undefined) return 'write'
  const upper = stripped.toUpperCase()
  const lead = /^[\s(]*([A-Z]+)/.exec(upper)?.[1]
  if (lead === undefined || !READ_LEADS.has(lead)) return 'write'
  return WRITE_MARKERS.test(upper) ? 'write' : 'read'
}

/** Statements a replica refused with 25006 (a function that writes, say): writes from now on. */
const learnedWrites = new LRUCache<string, true>({ max: 2_000 })

export function rememberWrite(text: string): void {
  learnedWrites.set(text, true)
}
