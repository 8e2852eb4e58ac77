import { createHash } from 'node:crypto'
import type { PgConnection } from './pg-internals.js'

/** Statements longer than this are one-offs (generated bulk SQL): preparing them wastes server memory. */
const MAX_CACHED_TEXT = 8_192

const caches = new WeakMap<PgConnection, StatementCache>()

/**
 * The name a statement is prepared under: `keel_` + the SHA-256 of its exact text, base64url (48 bytes,
 * within Postgres' 63). The name is a function of the text, so on any server connection a keel name can
 * only ever mean that text, whoever prepared it there: behind a transaction pooler one client may bind
 * a statement another client parsed on the same server connection, and then it runs the same SQL. A
 * per-connection counter (`keel_1`) meant a different statement on each client (ADR 0023).
 */
export function statementName(text: string): string {
  return `keel_${createHash('sha256').update(text).digest('base64url')}`
}

// keel's own fixed statements (BEGIN, scopes, WAL positions) are hashed once, not on every batch.
const fixedNames = new Map<string, string>()
const MAX_FIXED = 256

/** statementName, remembered for the few fixed texts keel sends as preludes and postludes. */
export function fixedStatementName(text: string): string {
  let name = fixedNames.get(text)
  if (name === undefined) {
    name = statementName(text)
    if (fixedNames.size < MAX_FIXED) fixedNames.set(text, name)
  }
  return name
}

/**
 * Per-connection LRU of server-side prepared statements, keyed by SQL text. A cached statement skips
 * Parse and planning on the server (the single biggest per-statement cost on loopback, and what RLS
 * makes dearer). Evicted statements are closed in the next batch the connection sends.
 */
export class StatementCache {
  readonly #max: number
  readonly #names = new Map<string, string>()
  readonly #toClose: string[] = []

  constructor(max: number) {
    this.#max = max
  }

  static of(connection: PgConnection, max: number): StatementCache {
    let cache = caches.get(connection)
    if (cache === undefined) {
      cache = new StatementCache(max)
      caches.set(connection, cache)
    }
    return cache
  }

  static cacheable(text: string): boolean {
    return text.length <= MAX_CACHED_TEXT
  }

  /** The statement's name on this connection, refreshing its recency; evicts the oldest past the bound. */
  nameFor(text: string): string {
    let name = this.#names.get(text)
    if (name !== undefined) {
      // Map keeps insertion order: re-inserting makes it the most recent.
      this.#names.delete(text)
      this.#names.set(text, name)
      return name
    }
    name = statementName(text)
    this.#names.set(text, name)
    if (this.#names.size > this.#max) {
      const [oldestText, oldestName] = this.#names.entries().next().value as [string, string]
      this.#names.delete(oldestText)
      this.#toClose.push(oldestName)
    }
    return name
  }

  /** Drops a statement whose Parse or plan failed or went stale; it is re-parsed next time. */
  forget(text: string, connection: PgConnection): void {
    const name = this.#names.get(text)
    if (name === undefined) return
    this.#names.delete(text)
    delete connection.parsedStatements[name]
    this.#toClose.push(name)
  }

  /** Writes Close for evicted statements ahead of the next batch (closing an unknown name is no error). */
  flushCloses(connection: PgConnection): void {
    for (const name of this.#toClose) {
      connection.close({ type: 'S', name })
      delete connection.parsedStatements[name]
    }
    this.#toClose.length = 0
  }
}
