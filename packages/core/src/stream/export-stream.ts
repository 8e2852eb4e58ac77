import { Readable } from 'node:stream'
import type { QueryResult } from '../client/query-types.js'
import { KeelError } from '../errors.js'
import { endWhenDropped, type ReadHolder } from './abandoned-reads.js'
import { csvLine } from './csv-line.js'
import { EXPORT_TYPES } from './export-types.js'
import { ndjsonSelect } from './ndjson-select.js'
import { type ReadSession, ReadTransaction } from './read-transaction.js'
import { batchSizeOf, type ExportOptions } from './stream-options.js'

/** Unqualified identifiers only: a schema-qualified name would step out of schema mode's search_path. */
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/
const CURSOR = 'keel_export'

/**
 * db.export(): a Readable of the tenant's rows of `tables`, all read in ONE REPEATABLE READ, READ ONLY
 * transaction (one snapshot: rows committed together are all there or none is), table after table
 * through a cursor. A FETCH is sent only when the Readable wants more (`_read`), so memory stays at
 * about one batch however slow the consumer. Destroying the stream (an error, the signal, the
 * consumer giving up) ends the transaction; the end of the data commits nothing (it only read).
 * It emits 'progress' ({@link ExportProgressEvent}) after each batch: exportJob reports it.
 */
export function exportTables(session: ReadSession, options: ExportOptions): Readable {
  const batchSize = batchSizeOf(options.batchSize)
  const tables = checkTables(options)
  const holder: ReadHolder = {}
  const out = new ExportReadable(session, options, tables, batchSize, holder)
  endWhenDropped(out, holder)
  return out
}

function checkTables(options: ExportOptions): readonly string[] {
  if (options.format !== 'ndjson' && options.format !== 'csv') {
    throw new KeelError('KEEL_QUERY_INVALID', "export format must be 'ndjson' or 'csv'")
  }
  const tables = options.tables
  if (!Array.isArray(tables) || tables.length === 0) {
    throw new KeelError('KEEL_QUERY_INVALID', 'export needs at least one table')
  }
  for (const table of tables) {
    if (typeof table !== 'string' || !TABLE_NAME.test(table)) {
      throw new KeelError('KEEL_QUERY_INVALID', 'export tables must be unqualified identifiers', {
        details: { table: String(table) },
      })
    }
  }
  if (options.format === 'csv' && tables.length !== 1) {
    throw new KeelError('KEEL_QUERY_INVALID', "format 'csv' exports exactly one table")
  }
  return [...tables]
}

/**
 * What db.export()'s Readable emits as 'progress' after each batch it read (before the batch is
 * pushed): the table being read, its rows so far, and the rows so far over all tables.
 */
export interface ExportProgressEvent {
  /** The table being read. */
  readonly table: string
  /** Rows read so far from that table. */
  readonly tableRows: number
  /** Rows read so far from all tables. */
  readonly rows: number
}

class ExportReadable extends Readable {
  readonly #session: ReadSession
  readonly #options: ExportOptions
  readonly #tables: readonly string[]
  readonly #batchSize: number
  readonly #holder: ReadHolder
  #read: ReadTransaction | undefined
  /** Index of the table whose cursor is open, -1 before the first. */
  #table = -1
  #cursorOpen = false
  #header = false
  /** The FETCH in flight: _destroy waits for it before ending the transaction on that connection. */
  #pumping: Promise<void> | undefined
  /** The next batch's FETCH, sent as soon as the previous full batch arrived. */
  #ahead: Promise<QueryResult<unknown[]>> | undefined
  #busy = false
  /** Rows read so far, in all tables and in the open one (the 'progress' event). */
  #rows = 0
  #tableRows = 0

  constructor(
    session: ReadSession,
    options: ExportOptions,
    tables: readonly string[],
    batchSize: number,
    holder: ReadHolder,
  ) {
    super({ encoding: 'utf8', ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#session = session
    this.#options = options
    this.#tables = tables
    this.#batchSize = batchSize
    this.#holder = holder
  }

  override _read(): void {
    // A _read while a pump runs needs nothing: the pump pushes again (push() resets Readable's
    // 'reading' state), or it stopped on a full buffer and the next _read starts a new one.
    if (this.#busy) return
    this.#busy = true
    this.#pumping = this.#pump().then(
      () => undefined,
      (error: unknown) => {
        this.destroy(error as Error)
      },
    )
  }

  /** Pushes batches until the consumer's buffer is full or the last table is done. */
  async #pump(): Promise<void> {
    try {
      await this.#pumpBatches()
    } finally {
      // Cleared in the same turn as the last push, before Readable can ask again.
      this.#busy = false
    }
  }

  async #pumpBatches(): Promise<void> {
    const signal = this.#options.signal
    // Opened at the first read, not when the stream is made: an export nobody reads holds nothing.
    this.#read ??= await ReadTransaction.open(this.#session, {
      isolationLevel: 'repeatable read',
      consistency: this.#options.consistency,
      signal,
      statementTimeoutMs: this.#options.statementTimeoutMs,
    })
    const read = this.#read
    this.#holder.read = read
    for (;;) {
      if (this.destroyed) return
      if (!this.#cursorOpen) {
        this.#table++
        if (this.#table >= this.#tables.length) {
          await read.end()
          this.push(null)
          return
        }
        const table = this.#tables[this.#table]!
        let select = `SELECT * FROM ${table}`
        if (this.#options.format === 'ndjson') {
          // The columns' types decide the casts that keep the documented form (ndjson-select.ts).
          const shape = await read.send(`${select} LIMIT 0`, undefined, signal)
          select = ndjsonSelect(table, shape.fields)
        }
        await read.send(`DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${select}`, undefined, signal)
        this.#cursorOpen = true
        this.#tableRows = 0
        this.#header = this.#options.format === 'csv'
      }
      const csv = this.#options.format === 'csv'
      const batch = await (this.#ahead ?? this.#fetch(read))
      this.#ahead = undefined
      if (this.destroyed) return
      if (batch.rows.length < this.#batchSize) {
        await read.send(`CLOSE ${CURSOR}`, undefined, signal)
        this.#cursorOpen = false
      } else {
        // Read-ahead of one batch: the server produces the next while this one is serialized and
        // consumed (COPY's overlap, with FETCH's bounds: at most two batches in memory).
        this.#ahead = this.#fetch(read)
      }
      let chunk = ''
      if (this.#header) {
        chunk += csvLine(batch.fields.map((field) => field.name))
        this.#header = false
      }
      if (csv) for (const row of batch.rows) chunk += csvLine(row)
      // ndjson: Postgres wrote each line (one text column).
      else for (const row of batch.rows) chunk += `${row[0] as string}\n`
      this.#rows += batch.rows.length
      this.#tableRows += batch.rows.length
      // Before the push: a listener (exportJob's progress) sees the count of what the consumer gets next.
      if (batch.rows.length > 0) this.emit('progress', this.#progress())
      if (chunk !== '' && !this.push(chunk)) return
    }
  }

  #fetch(read: ReadTransaction): Promise<QueryResult<unknown[]>> {
    const fetched = read.send<unknown[]>(
      `FETCH ${this.#batchSize} FROM ${CURSOR}`,
      undefined,
      this.#options.signal,
      {
        types: EXPORT_TYPES,
        rowMode: 'array',
      },
    )
    // Awaited by the next pump or by _destroy; a failure meanwhile is not an unhandled rejection.
    fetched.catch(() => undefined)
    return fetched
  }

  #progress(): ExportProgressEvent {
    return { table: this.#tables[this.#table]!, tableRows: this.#tableRows, rows: this.#rows }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const end = async () => {
      await this.#pumping
      // The read-ahead FETCH in flight finishes (or fails, then the connection is retired) first.
      await this.#ahead?.catch(() => undefined)
      await this.#read?.end(error ?? undefined)
    }
    end().then(
      () => callback(error),
      () => callback(error),
    )
  }
}
