/** A column of a result, as pg describes it (pg's FieldDef). */
export interface FieldDef {
  name: string
  tableID: number
  columnID: number
  dataTypeID: number
  dataTypeSize: number
  dataTypeModifier: number
  format: string
}

/** What a query resolves to: pg's own result object, so code written for node-postgres keeps working. */
export interface QueryResult<R = Record<string, unknown>> {
  rows: R[]
  rowCount: number | null
  command: string
  oid?: number | null
  fields: FieldDef[]
  /**
   * Set (true) only on a read served by a replica that may not have replayed this session's writes:
   * the primary was down and the call or config allowed it (`whenPrimaryDown: 'serve-stale'`, ADR 0043).
   */
  possiblyStale?: true
}

/** A `rowMode: 'array'` result: each row is an array in column order (duplicate names survive). */
export type QueryArrayResult<R extends unknown[] = unknown[]> = QueryResult<R>

/**
 * Per-query type parsers, as pg takes them (`types` of a QueryConfig): consulted for every column
 * instead of pg's global ones (`pg.types`).
 */
export interface CustomTypesConfig {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown
}

/**
 * pg's QueryConfig, accepted by db.query/tx.query in place of the text. `name` is accepted and
 * ignored: keel names (prepares and caches) statements itself, per connection (ADR 0031).
 */
export interface QueryConfig<I extends readonly unknown[] = unknown[]> {
  text: string
  values?: I | undefined
  /** Object rows; see QueryArrayConfig for `rowMode: 'array'`. */
  rowMode?: undefined
  types?: CustomTypesConfig | undefined
  name?: string | undefined
}

/**
 * A QueryConfig with `rowMode: 'array'`: rows are arrays in column order, typed by the tuple `R` of
 * `query<R>()` (asking for object rows here is a type error, as with pg's own types).
 */
export interface QueryArrayConfig<I extends readonly unknown[] = unknown[]>
  extends Omit<QueryConfig<I>, 'rowMode'> {
  rowMode: 'array'
}

/**
 * How fresh a read must be. 'session': it sees this session's own writes (a replica only once it has
 * replayed them); 'eventual': any healthy replica; 'strong': the primary.
 */
export type Consistency = 'session' | 'eventual' | 'strong'

export interface QueryOptions {
  /** Send this statement to the primary whatever it is (same as consistency 'strong'). */
  route?: 'primary'
  /** Overrides `postgres.consistency` for this read. */
  consistency?: Consistency
  /** Aborts the wait for a connection, or cancels the running statement (the connection is then retired). */
  signal?: AbortSignal
  /** statement_timeout for this statement alone, overriding the tenant's (0 = the server's). */
  statementTimeoutMs?: number
  /**
   * Overrides `postgres.whenPrimaryDown` for this read: what a read-your-writes read that needs the
   * primary does while the primary is down. 'fail' (the default) fails at once with KEEL_DB_UNAVAILABLE;
   * 'serve-stale' reads the freshest replica and sets `possiblyStale` on the result (ADR 0043).
   */
  whenPrimaryDown?: WhenPrimaryDown
}

/** See QueryOptions.whenPrimaryDown. */
export type WhenPrimaryDown = 'fail' | 'serve-stale'

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionOptions {
  isolationLevel?: IsolationLevel
  readOnly?: boolean
  /** With serializable and readOnly: DEFERRABLE (waits for a safe snapshot, then never fails to serialize). */
  deferrable?: boolean
  signal?: AbortSignal
  /** statement_timeout for every statement of this transaction (0 = the server's). */
  statementTimeoutMs?: number
}

/**
 * Anything that runs tenant-scoped SQL: a tenant client or a transaction. The first argument is the
 * text or a pg QueryConfig; `values` given as the second argument win over the config's (as in pg).
 * TenantClient and Transaction add an overload typing `rowMode: 'array'` rows as arrays.
 */
export interface Queryable {
  readonly tenantId: string
  query<R = Record<string, unknown>>(
    text: string | QueryConfig,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<R>>
}
