import pg from 'pg'
import type { PgPoolFactory } from '../client/engine.js'
import type { QueryConfig, QueryResult } from '../client/query-types.js'
import { LentClient, poolQuery, type SessionSource } from './lent-client.js'
import { type Callback, settle } from './pg-callback.js'

/** What the facade shows as `pool.options` (Prisma's adapter reads it): where keel's primary is, no secret. */
export interface PgPoolOptions {
  readonly max: number
  readonly host: string
  readonly port: number
  readonly database: string
}

type PoolClass = new (source: SessionSource, options: PgPoolOptions) => pg.Pool

let poolClass: PoolClass | undefined

/**
 * A pg.Pool of the `pg` keel imports (the app's own, `pg` being a peer dependency), so
 * `instanceof pg.Pool` holds (Prisma's adapter-pg, Drizzle). pg-pool's constructor opens nothing; every
 * method that would (query, connect) is keel's, and end() leaves keel's pools alone. Built on first use,
 * from `pg` as it is then.
 */
function facadeClass(): PoolClass {
  poolClass ??= class KeelPgPool extends pg.Pool {
    readonly #source: SessionSource

    constructor(source: SessionSource, options: PgPoolOptions) {
      super({ ...options })
      this.#source = source
    }

    // @ts-expect-error pg.Pool's overloads are narrower than what pg accepts at run time.
    override query(
      config: string | QueryConfig,
      values?: unknown,
      callback?: Callback<QueryResult>,
    ): Promise<QueryResult> | undefined {
      let params = values
      let done = callback
      if (typeof params === 'function') {
        done = params as Callback<QueryResult>
        params = undefined
      }
      let result: Promise<QueryResult>
      try {
        // Found now, in the caller's context: keel.pgPool() fails here without a tenant, sending nothing.
        const session = this.#source()
        result = poolQuery(session, config, params as readonly unknown[] | undefined)
      } catch (error) {
        result = Promise.reject(error)
      }
      return settle(result, done)
    }

    // @ts-expect-error pg.Pool's connect() types its client as a pg.PoolClient; this one is lazy.
    override connect(
      callback?: (error: Error | null, client?: LentClient, release?: (error?: unknown) => void) => void,
    ) {
      let lent: Promise<LentClient>
      try {
        // Fails at once without a tenant in context (keel.pgPool()); the client itself finds the
        // session again for each statement, so one kept by an ORM's own pool follows the context.
        this.#source()
        lent = Promise.resolve(new LentClient(this.#source))
      } catch (error) {
        lent = Promise.reject(error)
      }
      if (callback === undefined) return lent
      lent.then(
        (client) => callback(null, client, (error?: unknown) => client.release(error)),
        (error: Error) => callback(error),
      )
      return undefined
    }

    /** Ends nothing: the connections are keel's, closed by keel.close(). */
    override end(callback?: Callback<void>): Promise<void> {
      return settle(Promise.resolve(), callback) as Promise<void>
    }
  } as unknown as PoolClass
  return poolClass
}

/**
 * The factory keel's composition root hands the engine (client/ does not import this folder): a pg.Pool
 * over keel for one session, or for keel.current() (see facadeClass).
 */
export function pgPoolFactory(options: PgPoolOptions): PgPoolFactory {
  return (source) => {
    const Facade = facadeClass()
    return new Facade(source, options)
  }
}
