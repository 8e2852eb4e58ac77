import { toStatement } from '../client/query-config.js'
import { KeelError } from '../errors.js'
import { abortError } from '../pool/tenant-limiter.js'
import { classifySql } from '../routing/classify-sql.js'
import { loadParser, parserLoaded } from '../sql/sql-parser.js'
import { endWhenDropped, type ReadHolder } from './abandoned-reads.js'
import { type ReadSession, ReadTransaction } from './read-transaction.js'
import { batchSizeOf, type StreamOptions } from './stream-options.js'

const CURSOR = 'keel_stream'

/**
 * db.stream(): the rows of one read, `batchSize` at a time, from a NO SCROLL cursor in a READ ONLY
 * transaction (read-transaction.ts: a replica when the session allows, the tenant's scope as in a
 * transaction). The next FETCH is sent only when the consumer asks for the row after the last batch
 * (backpressure). However the consumer stops (break, throw, the signal), the transaction is rolled
 * back and the connection given back, or retired when that cannot be shown clean.
 */
export function streamRows<R>(
  session: ReadSession,
  text: unknown,
  values: readonly unknown[] | undefined,
  options: StreamOptions = {},
): AsyncGenerator<R, void, undefined> {
  const holder: ReadHolder = {}
  const rows = fetchRows<R>(session, text, values, options, holder)
  endWhenDropped(rows, holder)
  return rows
}

async function* fetchRows<R>(
  session: ReadSession,
  text: unknown,
  values: readonly unknown[] | undefined,
  options: StreamOptions,
  holder: ReadHolder,
): AsyncGenerator<R, void, undefined> {
  const { engine } = session
  const batchSize = batchSizeOf(options.batchSize)
  const statement = toStatement(text, values)
  if (!parserLoaded()) await loadParser()
  const effect = engine.checkStatement(statement.text)
  if (classifySql(statement.text) === 'write') {
    throw new KeelError('KEEL_QUERY_INVALID', 'db.stream() runs reads only (SELECT, VALUES, TABLE)', {
      details: { tenantId: session.tenantId },
    })
  }
  const signal = options.signal
  if (signal?.aborted === true) throw abortError(signal)
  const read = await ReadTransaction.open(session, {
    consistency: options.consistency,
    signal,
    statementTimeoutMs: options.statementTimeoutMs,
  })
  holder.read = read
  // A statement that may leave session state (a function keel cannot vouch for) retires the connection.
  const retire = effect !== 'plain'
  let fetching = false
  // Aborted while the consumer holds a row: the transaction ends now, not when the consumer comes back.
  const onAbort = () => {
    if (!fetching) void read.end(abortError(signal!), retire)
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  let failure: unknown
  try {
    fetching = true
    await read.send(`DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${statement.text}`, statement.values, signal)
    for (;;) {
      fetching = true
      const batch = await read.send<R>(
        `FETCH ${batchSize} FROM ${CURSOR}`,
        undefined,
        signal,
        statement.shape,
      )
      fetching = false
      for (const row of batch.rows) {
        yield row
        if (aborted(signal)) throw abortError(signal!)
      }
      if (batch.rows.length < batchSize) break
      if (aborted(signal)) throw abortError(signal!)
    }
  } catch (error) {
    failure = error
    throw error
  } finally {
    signal?.removeEventListener('abort', onAbort)
    await read.end(failure, retire)
  }
}

/** Read through a call: TypeScript would otherwise keep the narrowing made before the loop. */
function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}
