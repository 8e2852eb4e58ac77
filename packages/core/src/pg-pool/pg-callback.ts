import type { QueryResult } from '../client/query-types.js'

export type Callback<T> = (error: Error | null, result?: T) => void

/**
 * pg's two calling styles: with a callback, the callback gets the outcome and nothing is returned (as
 * pg does; Knex and TypeORM use it); without one, the promise. A callback that throws does not turn
 * into an unhandled rejection: it is rethrown on the next tick, as pg does.
 */
export function settle<T>(promise: Promise<T>, callback: Callback<T> | undefined): Promise<T> | undefined {
  if (callback === undefined) return promise
  promise.then(
    (result) => call(() => callback(null, result)),
    (error: Error) => call(() => callback(error)),
  )
  return undefined
}

function call(fn: () => void): void {
  try {
    fn()
  } catch (error) {
    process.nextTick(() => {
      throw error
    })
  }
}

/** What pg resolves a statement Postgres answered without rows (BEGIN, COMMIT) to. */
export function commandResult(command: string, rowMode: unknown): QueryResult<never> {
  return Object.assign(
    { command, rowCount: null, oid: null, rows: [], fields: [] },
    { rowAsArray: rowMode === 'array' },
  )
}
