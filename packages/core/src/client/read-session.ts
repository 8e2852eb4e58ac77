import type { Readable } from 'node:stream'
import type { Placement } from '../placement/placement.js'
import type { SessionPosition } from '../routing/session-position.js'
import type { Engine } from './engine.js'
import type { Consistency } from './query-types.js'
import type { StatementPath } from './statement-path.js'

// What a session hands the streaming readers (stream/), and what they give back: client/ owns the
// interface, stream/ implements it and createKeel wires it in (as with the pg.Pool facade), so the
// session does not import the readers.

/** What a streaming read needs of the session that opens it (TenantClient hands it in). */
export interface ReadSession {
  readonly engine: Engine
  readonly tenantId: string
  readonly position: SessionPosition
  readonly statements: StatementPath
  placement(): Placement | Promise<Placement>
}

/** db.stream()'s options. */
export interface StreamOptions {
  /** Rows fetched per round trip (FETCH n), and so the most rows held in memory at once. Default 1,000. */
  batchSize?: number
  /** Cancels the FETCH in flight (the connection is then retired) or ends the stream between batches. */
  signal?: AbortSignal
  /** Overrides `postgres.consistency` for this read: 'session' reads a replica only once it has replayed this session's writes. */
  consistency?: Consistency
  /** statement_timeout for each statement of the stream (each FETCH), overriding the tenant's (0 = the server's). */
  statementTimeoutMs?: number
}

/** db.export()'s options. */
export interface ExportOptions {
  /** Unqualified table names (identifiers only): the tenant's scope decides which rows, and in schema mode which schema. */
  tables: readonly string[]
  /** 'ndjson': one `{"table":name,"row":{...}}` line per row; 'csv': one table, a header line, RFC 4180 quoting. */
  format: 'ndjson' | 'csv'
  /** Accepted (1..100,000) for db.stream()'s sake; an export reads through COPY, which has no batches. */
  batchSize?: number
  /** Destroys the stream (an AbortError), ending the COPY in progress (its connection is then retired). */
  signal?: AbortSignal
  /** Overrides `postgres.consistency`: where the snapshot may be taken (see StreamOptions). */
  consistency?: Consistency
  /** Bounds each table's COPY as a whole; without it an export runs with no statement_timeout (ADR 0044). */
  statementTimeoutMs?: number
  /**
   * Paces the export: on average at most this many rows a second (bursts of up to a tenth of a
   * second's worth), the COPY paused in between so the server waits too. It keeps a big export from
   * taking the CPU its neighbours need (README "Pacing an export"). Default: as fast as the consumer reads.
   */
  maxRowsPerSecond?: number
}

/** db.stream() and db.export(), implemented in stream/ and handed to the engine by createKeel. */
export interface Readers {
  stream<R>(
    session: ReadSession,
    text: unknown,
    values: readonly unknown[] | undefined,
    options: StreamOptions | undefined,
  ): AsyncGenerator<R, void, undefined>
  export(session: ReadSession, options: ExportOptions): Readable
}
