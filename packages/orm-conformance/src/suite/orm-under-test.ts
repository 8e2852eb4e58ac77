import type { Keel } from '@keel/core'
import type pg from 'pg'

export type Isolation = 'read committed' | 'repeatable read' | 'serializable'

/** An invoice an ORM inserts; dates as strings so every ORM gets the same value. */
export interface NewInvoice {
  tenantId: string
  number: string
  amount: string
  issuedOn: string
  dueAt: string
}

/** What the suite asks of an ORM, at top level or inside one of its transactions. */
export interface OrmStatements {
  /** The invoices the ORM sees (tenant and number), ordered by id. */
  invoices(): Promise<Array<{ tenantId: string; number: string }>>
  insertInvoice(row: NewInvoice): Promise<void>
  /**
   * The invoice with this id (ids are unique across tenants), by id alone: null for another tenant's.
   * Only for an ORM that merges concurrent callers' lookups (Prisma's findUnique), the case it guards.
   */
  invoiceById?(id: string): Promise<{ tenantId: string; number: string } | null>
}

/** Inside the ORM's transaction: its own nesting (savepoints) and a look at the isolation level. */
export interface OrmTransaction extends OrmStatements {
  savepoint(fn: (sp: OrmTransaction) => Promise<void>): Promise<void>
  /** `current_setting('transaction_isolation')`, through the ORM's raw SQL. */
  isolation(): Promise<string>
}

export interface OrmUnderTest extends OrmStatements {
  transaction(fn: (tx: OrmTransaction) => Promise<void>, isolation?: Isolation): Promise<void>
  /**
   * Every invoice joined with its payments through the ORM, both tables' columns (four of them share a
   * name), in the ORM's own shapes and value types, ordered by invoice then payment id.
   */
  join(): Promise<unknown[]>
  /** The invoice's and the payment's amount of each joined row, as strings. */
  joinAmounts(rows: unknown[]): Array<[invoice: string, payment: string]>
  close(): Promise<void>
}

/**
 * Runs an ORM's start-up queries (TypeORM asks Postgres for its version, database and schema): on keel
 * inside keel.run() for some tenant, since no statement runs without one; on a raw pool as they are.
 */
export type StartUp = <T>(fn: () => Promise<T>) => Promise<T>

/**
 * One ORM: how to build one instance of it over a pool (keel's pgPool, or a raw pg.Pool). `keel` is given
 * when `pool` is its keel.pgPool(), for an ORM that needs a client per tenant (Prisma).
 */
export interface OrmFixture {
  name: string
  open(pool: pg.Pool, startUp: StartUp, keel?: Keel): OrmUnderTest | Promise<OrmUnderTest>
}
