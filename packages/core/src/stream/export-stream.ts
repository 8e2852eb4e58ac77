import { Readable } from 'node:stream'
import { KeelError } from '../errors.js'
import { endWhenDropped, type ReadHolder } from './abandoned-reads.js'
import { copyStatement } from './copy-statement.js'
import { PACE_STEP_MS, Pace } from './export-pace.js'
import { type ReadSession, ReadTransaction } from './read-transaction.js'
import { RecordCounter } from './record-counter.js'
import { batchSizeOf, type ExportOptions } from './stream-options.js'

/** Unqualified identifiers only: a schema-qualified name would step out of schema mode's search_path. */
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/**
 * db.export(): a Readable of the tenant's rows of `tables`, all read in ONE REPEATABLE READ, READ ONLY
 * transaction (one snapshot: rows committed together are all there or none is), table after table
 * through `COPY (SELECT ...) TO STDOUT` (ADR 0044; Postgres writes every byte, copy-statement.ts). The
 * COPY's chunks are pushed as they come and the COPY paused while the consumer's buffer is full (its
 * socket then stops being read: TCP holds the server back), so memory stays at a few chunks however
 * slow the consumer. Destroying the stream (an error, the signal, the consumer giving up) ends the
 * transaction, retiring the connection when a COPY was cut short; the end of the data commits nothing.
 * It emits 'progress' ({@link ExportProgressEvent}) per chunk: exportJob reports it. With
 * maxRowsPerSecond the COPY is also paused while the export is ahead of that pace (ADR 0050).
 */
export function exportTables(session: ReadSession, options: ExportOptions): Readable {
  // Still checked (a public option): COPY has no batches, so it no longer changes what is sent.
  batchSizeOf(options.batchSize)
  const tables = checkTables(options)
  checkPace(options.maxRowsPerSecond)
  const holder: ReadHolder = {}
  const out = new ExportReadable(session, options, tables, holder)
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

function checkPace(rate: number | undefined): void {
  if (rate === undefined) return
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
    throw new KeelError('KEEL_QUERY_INVALID', 'export maxRowsPerSecond must be a positive number', {
      details: { maxRowsPerSecond: String(rate) },
    })
  }
}

/**
 * What db.export()'s Readable emits as 'progress' for each chunk of a table's COPY (before the chunk is
 * pushed): the table being read, its rows so far (records whose line end has arrived), and the rows so
 * far over all tables.
 */
export interface ExportProgressEvent {
  /** The table being read. */
  readonly table: string
  /** Rows read so far from that table. */
  readonly tableRows: number
  /** Rows read so far from all tables. */
  readonly rows: number
}

/** One table's COPY in progress: records counted, the header still due, a partial record held back. */
interface TableCopy {
  readonly counter: RecordCounter
  header: number
  carry: Buffer | undefined
}

class ExportReadable extends Readable {
  readonly #session: ReadSession
  readonly #options: ExportOptions
  readonly #tables: readonly string[]
  readonly #holder: ReadHolder
  #read: ReadTransaction | undefined
  #started = false
  /** The running pass over the tables: _destroy waits for it before ending the transaction. */
  #running: Promise<void> | undefined
  /** The COPY being read, paused while the consumer's buffer is full. */
  #copy: Readable | undefined
  #table = -1
  /** Settles the running table's #copyTable (held here: the COPY stream holds this Readable weakly). */
  #settle: { resolve: () => void; reject: (error: unknown) => void } | undefined
  /** Rows read so far, in all tables and in the open one (the 'progress' event). */
  #rows = 0
  #tableRows = 0
  /** maxRowsPerSecond's schedule, from the first chunk on; undefined when the export is not paced. */
  readonly #pace: Pace | undefined
  /** Whether the consumer asked for more since push() last said it was full. */
  #wanted = true

  constructor(session: ReadSession, options: ExportOptions, tables: readonly string[], holder: ReadHolder) {
    super({ encoding: 'utf8', ...(options.signal === undefined ? {} : { signal: options.signal }) })
    this.#session = session
    this.#options = options
    this.#tables = tables
    this.#holder = holder
    this.#pace = options.maxRowsPerSecond === undefined ? undefined : new Pace(options.maxRowsPerSecond)
  }

  override _read(): void {
    if (this.#started) {
      this.#wanted = true
      if (this.#pace?.waiting !== true) this.#copy?.resume()
      return
    }
    // Opened at the first read, not when the stream is made: an export nobody reads holds nothing.
    this.#started = true
    this.#running = this.#run().catch((error: unknown) => {
      this.destroy(error as Error)
    })
  }

  async #run(): Promise<void> {
    const options = this.#options
    const signal = options.signal
    const read = await ReadTransaction.open(this.#session, {
      isolationLevel: 'repeatable read',
      consistency: options.consistency,
      signal,
      statementTimeoutMs: options.statementTimeoutMs,
    })
    this.#read = read
    this.#holder.read = read
    if (this.destroyed) return
    // A COPY lasts as long as its consumer takes: the tenant's statement timeout would cut a slow
    // download, so it bounds each table's COPY only when the export asks for one (ADR 0044).
    let deadlineMs = 0
    if (options.statementTimeoutMs === undefined) {
      await read.send('SET LOCAL statement_timeout = 0', undefined, signal)
    } else {
      deadlineMs = read.statementDeadlineMs
    }
    for (this.#table = 0; this.#table < this.#tables.length; this.#table++) {
      const table = this.#tables[this.#table]!
      // The columns' types decide the expressions that write the documented form (copy-statement.ts).
      const shape = await read.send(`SELECT * FROM ${table} LIMIT 0`, undefined, signal)
      if (this.destroyed) return
      this.#tableRows = 0
      await this.#copyTable(
        read.copyOut(copyStatement(table, options.format, shape.fields), signal, deadlineMs),
      )
      if (this.destroyed) return
    }
    await read.end()
    this.push(null)
  }

  /**
   * Pushes one table's COPY output, pausing the COPY while push() says the consumer is full. Each push
   * holds whole records (as the cursor's batches did): the partial record at a chunk's end waits for
   * the next chunk, so a consumer may split a chunk into lines. The COPY stream (reachable from the
   * pool's connection) holds this Readable only weakly: an export the app dropped mid-read can still
   * be collected, and abandoned-reads.ts then ends its transaction (retiring the connection mid-COPY).
   */
  #copyTable(copy: Readable): Promise<void> {
    // The header record is not a row.
    const table: TableCopy = {
      counter: new RecordCounter(this.#options.format === 'csv'),
      header: this.#options.format === 'csv' ? 1 : 0,
      carry: undefined,
    }
    this.#copy = copy
    const done = new Promise<void>((resolve, reject) => {
      this.#settle = { resolve, reject }
    })
    ExportReadable.#listen(new WeakRef<ExportReadable>(this), copy, table)
    return done
  }

  /** Static, so the listeners' closures hold neither `this` nor the promise's functions. */
  static #listen(self: WeakRef<ExportReadable>, copy: Readable, table: TableCopy): void {
    copy.on('data', (chunk: Buffer) => {
      const out = self.deref()
      if (out === undefined) copy.pause()
      else out.#take(copy, table, chunk)
    })
    copy.once('end', () => {
      const out = self.deref()
      if (out !== undefined) out.#ended(table)
    })
    copy.once('error', (error: Error) => {
      const out = self.deref()
      if (out !== undefined) out.#settle?.reject(error)
    })
    // Destroyed without an error (the export itself was destroyed): nothing more comes.
    copy.once('close', () => {
      const out = self.deref()
      if (out !== undefined) out.#settle?.resolve()
    })
  }

  #take(copy: Readable, table: TableCopy, chunk: Buffer): void {
    let records = table.counter.count(chunk)
    const end = table.counter.lastEnd
    const carry = table.carry
    if (records === 0) {
      table.carry = carry === undefined ? chunk : Buffer.concat([carry, chunk])
      return
    }
    const whole =
      carry === undefined ? chunk.subarray(0, end) : Buffer.concat([carry, chunk.subarray(0, end)])
    table.carry = end < chunk.length ? chunk.subarray(end) : undefined
    if (table.header > 0) {
      records--
      table.header = 0
    }
    this.#rows += records
    this.#tableRows += records
    // Before the push: a listener (exportJob's progress) sees the count of what the consumer gets next.
    if (records > 0) this.emit('progress', this.#progress())
    if (!this.push(whole)) {
      this.#wanted = false
      copy.pause()
    }
    if (this.#pace !== undefined && records > 0) this.#paceAfter(copy, records)
  }

  /** Pauses the COPY while the export is ahead of maxRowsPerSecond; resumes it when due, if wanted. */
  #paceAfter(copy: Readable, records: number): void {
    const pace = this.#pace!
    const aheadMs = pace.took(records)
    if (aheadMs < PACE_STEP_MS) return
    copy.pause()
    pace.wait(aheadMs, () => {
      if (this.#wanted && !this.destroyed) copy.resume()
    })
  }

  #ended(table: TableCopy): void {
    this.#copy = undefined
    // COPY ends every record with LF: nothing is left over unless the output was cut.
    if (table.carry !== undefined) this.push(table.carry)
    this.#settle?.resolve()
  }

  #progress(): ExportProgressEvent {
    return { table: this.#tables[this.#table]!, tableRows: this.#tableRows, rows: this.#rows }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#pace?.cancel()
    const end = async () => {
      // The COPY stops where it is; end() retires its connection (it is mid-COPY).
      this.#copy?.destroy()
      await this.#running
      await this.#read?.end(error ?? undefined)
    }
    end().then(
      () => callback(error),
      () => callback(error),
    )
  }
}
