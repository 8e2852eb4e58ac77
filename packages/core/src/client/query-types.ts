/** What a query resolves to: pg's own result shape, so code written for node-postgres keeps working. */
export interface QueryResult<R = Record<string, unknown>> {
  rows: R[]
  rowCount: number | null
  command: string
  fields: Array<{ name: string; dataTypeID: number }>
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
}

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionOptions {
  isolationLevel?: IsolationLevel
  readOnly?: boolean
  signal?: AbortSignal
  /** statement_timeout for every statement of this transaction (0 = the server's). */
  statementTimeoutMs?: number
}

/** Anything that runs tenant-scoped SQL: a tenant client or a transaction. */
export interface Queryable {
  readonly tenantId: string
  query<R = Record<string, unknown>>(
    text: string,
    values?: readonly unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<R>>
}
