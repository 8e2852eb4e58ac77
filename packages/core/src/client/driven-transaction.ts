import { KeelError } from '../errors.js'
import type { TransactionModes } from '../sql/transaction-command.js'
import type { OpenTransaction } from './open-transaction.js'
import { type PinnedTransaction, type SavepointKind, transactionControl } from './pinned-transaction.js'
import type { QueryConfig, QueryResult, TransactionOptions } from './query-types.js'

let nested = 0

/**
 * A transaction driven by statements rather than a callback: BEGIN ... COMMIT sent by an ORM through
 * the pg.Pool facade (ADR 0031). Nothing is sent at BEGIN: the connection is leased, and BEGIN (with
 * the isolation and access mode known by then, SET TRANSACTION included) and the tenant scope travel
 * with the first real statement, in one round trip. Begun inside the session's own db.transaction()
 * callback, it is a savepoint of that transaction, as db.transaction() is there.
 */
export class DrivenTransaction {
  /** The tenant whose session began it: its statements are that tenant's, whoever sends them. */
  readonly tenantId: string
  readonly #begin: (options: TransactionOptions) => Promise<OpenTransaction>
  readonly #outer: PinnedTransaction | undefined
  #modes: TransactionModes
  #opening: Promise<OpenTransaction | undefined> | undefined
  #savepoint: string | undefined
  #failed: unknown

  constructor(
    tenantId: string,
    modes: TransactionModes,
    outer: PinnedTransaction | undefined,
    begin: (options: TransactionOptions) => Promise<OpenTransaction>,
  ) {
    this.tenantId = tenantId
    this.#outer = outer
    this.#begin = begin
    this.#modes = {}
    this.#merge(modes)
  }

  /** True once anything was sent (the first statement): SET TRANSACTION then goes to Postgres. */
  get started(): boolean {
    return this.#opening !== undefined
  }

  /** SET TRANSACTION before the first statement: folded into the BEGIN that statement carries. */
  setModes(modes: TransactionModes): void {
    this.#merge(modes)
  }

  async query<R>(
    text: string | QueryConfig,
    values: readonly unknown[] | undefined,
  ): Promise<QueryResult<R>> {
    const tx = await this.#tx()
    return tx.query<R>(text as QueryConfig, values)
  }

  async savepoint(kind: SavepointKind, name: string): Promise<QueryResult> {
    return transactionControl().savepoint(await this.#tx(), kind, name)
  }

  /** COMMIT; nothing to send when no statement ran. */
  async commit(): Promise<void> {
    const open = await this.#settled()
    if (this.#savepoint !== undefined) {
      await transactionControl().savepoint(this.#outer!, 'release', this.#savepoint)
      return
    }
    await open?.commit()
  }

  /** ROLLBACK; `destroy` retires the connection instead (a client released with an error). */
  async rollback(destroy = false): Promise<void> {
    if (this.#failed !== undefined) return
    const open = await this.#settled()
    if (this.#savepoint !== undefined) {
      const control = transactionControl()
      await control.savepoint(this.#outer!, 'rollback_to', this.#savepoint)
      await control.savepoint(this.#outer!, 'release', this.#savepoint)
      return
    }
    await open?.rollback(undefined, destroy)
  }

  #merge(modes: TransactionModes): void {
    if (
      this.#outer !== undefined &&
      (modes.isolationLevel !== undefined || modes.readOnly === true || modes.deferrable === true)
    ) {
      throw new KeelError(
        'KEEL_QUERY_INVALID',
        'a transaction begun inside db.transaction() is a savepoint of it: isolation and access mode belong to the outer transaction',
      )
    }
    this.#modes = { ...this.#modes, ...modes }
  }

  /** What was begun, once beginning settled; throws when the transaction could not begin. */
  async #settled(): Promise<OpenTransaction | undefined> {
    const open = await this.#opening?.catch(() => undefined)
    if (this.#failed !== undefined) throw this.#abortedError()
    return open
  }

  async #tx(): Promise<PinnedTransaction> {
    if (this.#failed !== undefined) throw this.#abortedError()
    if (this.#outer !== undefined) {
      if (this.#opening === undefined) {
        const name = `keel_orm_${++nested}`
        this.#opening = transactionControl()
          .savepoint(this.#outer, 'savepoint', name)
          .then(
            () => {
              this.#savepoint = name
              return undefined
            },
            (error: unknown) => {
              this.#failed = error
              throw error
            },
          )
      }
      await this.#opening
      return this.#outer
    }
    if (this.#opening === undefined) {
      const { isolationLevel, readOnly, deferrable } = this.#modes
      this.#opening = this.#begin({
        ...(isolationLevel === undefined ? {} : { isolationLevel }),
        ...(readOnly === undefined ? {} : { readOnly }),
        ...(deferrable === undefined ? {} : { deferrable }),
      }).then(
        (open) => open,
        (error: unknown) => {
          this.#failed = error
          throw error
        },
      )
    }
    return (await this.#opening)!.tx
  }

  #abortedError(): KeelError {
    return new KeelError(
      'KEEL_TRANSACTION_ABORTED',
      'this transaction could not begin (see cause); ROLLBACK it and begin again',
      { cause: this.#failed },
    )
  }
}
