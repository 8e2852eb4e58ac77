import type pg from 'pg'
import { type CacheApi, CacheClient, SHARED_SCOPE } from './cache/cache-client.js'
import type { Engine } from './client/engine.js'
import { type CurrentEntry, openTenantClient, TenantClient } from './client/tenant-client.js'
import type { KeelConfig, ResolvedConfig } from './config/config-schema.js'
import { TenantContext } from './context/tenant-context.js'
import { KeelError } from './errors.js'
import { type Health, healthOf } from './health.js'
import { type JobDefinition, type ResolvedJobDefinition, resolveDefinition } from './jobs/job-definition.js'
import type { JobRuntime, StartWorkerOptions } from './jobs/job-runtime.js'
import type { JobWorker } from './jobs/job-worker.js'
import { SessionPosition } from './routing/session-position.js'
import { validateTenantId } from './tenancy/validate-tenant-id.js'
import { type Wiring, wireKeel } from './wire-keel.js'

export type { DatabaseHealth, Degraded, Health, HostHealth, ReplicaHealth, ServerHealth } from './health.js'

let build: (wiring: Wiring) => Keel

export interface TenantOptions {
  /** A `db.consistencyToken` from an earlier request or the job's producer. Garbage is never an error. */
  consistencyToken?: string | undefined
}

/**
 * The SDK instance: build one per process with createKeel() and share it. The constructor is private
 * (ADR 0030): what it takes is keel's wiring, not something an app builds.
 */
export class Keel {
  static {
    build = (wiring) => new Keel(wiring)
  }

  readonly config: Readonly<ResolvedConfig>
  /** The cache for data shared by all tenants (same API as db.cached / db.invalidate). */
  readonly cache: CacheApi
  readonly #engine: Engine
  readonly #jobs: JobRuntime | undefined
  readonly #definitions: Map<string, ResolvedJobDefinition>
  readonly #context = new TenantContext<CurrentEntry>()
  #closing: Promise<void> | undefined
  #pgPool: pg.Pool | undefined

  private constructor({ config, engine, jobs, definitions }: Wiring) {
    this.config = config
    this.#engine = engine
    this.#jobs = jobs
    this.#definitions = definitions
    this.cache = new CacheClient(engine.cache, SHARED_SCOPE, undefined, () => engine.assertOpen())
  }

  /**
   * A client scoped to one tenant, and a read-your-writes session. Cheap: create one per request; pass
   * the previous request's `consistencyToken` to keep reading your writes across requests.
   */
  tenant(id: string, options?: TenantOptions): TenantClient {
    this.#engine.assertOpen()
    return this.#session(id, options?.consistencyToken, false)
  }

  #session(id: string, token: unknown, acceptedWork: boolean): TenantClient {
    const tenantId = validateTenantId(
      id,
      this.config.tenants.idPattern,
      this.config.tenancy.mode === 'schema',
    )
    this.#engine.placements.validate(tenantId)
    // A token that is not even a string is garbage like any other: the session reads the primary.
    const position =
      typeof token === 'string' || token === undefined
        ? SessionPosition.fromToken(token)
        : SessionPosition.untrusted()
    return openTenantClient(this.#engine, tenantId, position, this.#context, acceptedWork)
  }

  /**
   * Forgets where a tenant lives (database mode): its next call, in this process, asks
   * tenancy.resolve again. Call it after moving a tenant (and in every process: see the README).
   * Connections to its old database stay with that database's pool until they idle out. No-op in rls
   * and schema modes.
   */
  invalidateTenant(id: string): void {
    const tenantId = validateTenantId(
      id,
      this.config.tenants.idPattern,
      this.config.tenancy.mode === 'schema',
    )
    this.#engine.placements.invalidate(tenantId)
  }

  /** Runs `fn` with `db` as the current tenant client, reachable from deep code via current(). */
  run<R>(db: TenantClient, fn: () => R): R {
    if (!(db instanceof TenantClient)) {
      throw new KeelError('KEEL_TENANT_INVALID', 'keel.run() needs a client from keel.tenant(id)')
    }
    // Entering run() again with the same db inside its own db.transaction(cb) (a helper, a library hook)
    // must stay in that transaction: a fresh entry would drop `tx`, and the statements below would
    // commit on another connection while the transaction rolls back.
    const current = this.#context.maybeCurrent()
    return this.#context.run(current?.client === db ? current : { client: db }, fn)
  }

  /**
   * Defines a job: its zod schema (checked at enqueue and before each attempt), handler, retries,
   * backoff and per-attempt timeout. Define every job in producers and workers alike.
   */
  defineJob<P, R>(name: string, definition: JobDefinition<P, R>): void {
    this.#engine.assertOpen()
    const resolved = resolveDefinition(name, definition)
    if (this.#definitions.has(name)) {
      throw new KeelError('KEEL_JOB_INVALID', `job ${JSON.stringify(name)} is already defined`, {
        details: { name },
      })
    }
    this.#definitions.set(name, resolved)
  }

  /**
   * Starts workers for defined jobs: a BullMQ worker per job name, each on its job's own queue, so it is
   * handed only jobs it runs (ADR 0025). Each job runs as its tenant (a db resuming the producer's
   * consistency token, inside keel.run) and continues the producer's trace. keel.close() stops it.
   */
  startWorker(options?: StartWorkerOptions): JobWorker {
    this.#engine.jobPort()
    // jobPort() threw unless jobs are configured (or keel is closed).
    return this.#jobs!.startWorker(
      {
        runAs: (tenantId, consistencyToken, fn) => {
          // A job already running is accepted work: its session may use the pools while close()
          // drains (workers close first and wait for their running jobs).
          const db = this.#session(tenantId, consistencyToken, true)
          return this.run(db, () => fn(db))
        },
        queryPrimaries: (text, values) => this.#engine.queryPrimaries(text, values),
      },
      options,
    )
  }

  /**
   * The tenant client of the surrounding keel.run(); throws KEEL_NO_TENANT_CONTEXT outside one. Inside
   * `db.transaction(fn)` it is that `db`, and a session inside its own transaction's callback acts on
   * the transaction: query() runs in it, transaction() makes a savepoint, enqueue() uses the outbox.
   */
  current(): TenantClient {
    return this.#context.current().client
  }

  /**
   * A `pg.Pool` of the app's `pg` that follows keel.current(): each statement (each transaction, from
   * its BEGIN) runs for the tenant of the context it is sent from, so one ORM instance serves every
   * request. With no tenant in context every call fails with KEEL_NO_TENANT_CONTEXT and sends nothing.
   * See TenantClient.pgPool() and ADR 0031. The same object on every call.
   */
  pgPool(): pg.Pool {
    this.#pgPool ??= this.#engine.pgPool(() => this.current())
    return this.#pgPool
  }

  /** Like current(), but undefined outside keel.run(). */
  maybeCurrent(): TenantClient | undefined {
    return this.#context.maybeCurrent()?.client
  }

  /** The primary (a live round trip), each replica (from the monitor: lag, rotation) and tenant usage. */
  health(): Promise<Health> {
    return healthOf(this.#engine)
  }

  /**
   * Refuses new calls at once (KEEL_CLOSED), lets every call it accepted finish (running, queued for a
   * connection, transactions in progress; up to postgres.closeTimeoutMs, then they are cancelled),
   * then closes the pools.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      const engine = this.#engine
      engine.closed = true
      this.#closing = (async () => {
        // Workers first: their running jobs still need the pools.
        await this.#jobs?.close()
        await Promise.all([engine.drainAndEnd(), engine.cache.close()])
      })()
    }
    return this.#closing
  }
}

/** Validates the config (throws KEEL_CONFIG_INVALID), then wires keel. Opens no connection yet. */
export function createKeel(config: KeelConfig): Keel {
  return build(wireKeel(config))
}
