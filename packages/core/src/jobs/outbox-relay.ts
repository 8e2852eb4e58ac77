import type { Logger, ResolvedConfig } from '../config/config-schema.js'
import type { JobTelemetry } from '../telemetry/job-telemetry.js'
import type { JobHost } from './job-consumer.js'
import { type JobProducer, SWEPT_TOKEN } from './job-producer.js'
import { OUTBOX_TABLE, OUTBOX_TENANTS_FUNCTION, type OutboxRow } from './outbox.js'

type JobsConfig = NonNullable<ResolvedConfig['jobs']>

/** What the relay deletes through: a tenant-scoped client (keel's), like every keel statement. */
export interface TenantQueryable {
  query(text: string, values?: readonly unknown[]): Promise<unknown>
}

/** Tenants swept per sweep, and rows per tenant per sweep. */
const TENANTS_PER_SWEEP = 100
const ROWS_PER_TENANT = 100

/**
 * Moves committed outbox rows (ADR 0015) to the queue: the relay after COMMIT, and the workers' sweep of
 * rows whose process died before relaying them. Both read and delete rows only in the tenant's own scope
 * (ADR 0025): the outbox's policy trusts no setting but the tenant's, and the sweep learns which tenants
 * have stale rows from a SECURITY DEFINER function that returns tenant ids and nothing else.
 */
export class OutboxRelay {
  readonly #config: JobsConfig
  readonly #producer: JobProducer
  readonly #telemetry: JobTelemetry
  readonly #logger: Logger | undefined
  #timer: NodeJS.Timeout | undefined
  #sweeping = false

  constructor(
    config: JobsConfig,
    producer: JobProducer,
    telemetry: JobTelemetry,
    logger: Logger | undefined,
  ) {
    this.#config = config
    this.#producer = producer
    this.#telemetry = telemetry
    this.#logger = logger
  }

  /**
   * Adds the rows' jobs, then deletes the rows through `db`, the tenant's scope. A row relayed twice
   * (after commit, and by a sweep that found it) is one job: its id is the job's.
   */
  async relay(db: TenantQueryable, rows: readonly OutboxRow[], consistencyToken: string | undefined) {
    if (rows.length === 0) return
    await this.#producer.addRows(rows, consistencyToken)
    await db.query(DELETE_ROWS, [rows[0]!.tenant_id, rows.map((r) => r.id)])
  }

  /**
   * Relays rows older than `ageMs` (their process died before relaying them), tenant by tenant, each in
   * its tenant's scope. Rows are locked while relayed, so concurrent sweepers split the work. Rows of jobs
   * this process did not define stay for a process that did (a rolling deploy). Returns the rows relayed.
   */
  async sweep(host: JobHost, ageMs: number): Promise<number> {
    const tenants = await host.queryPrimaries<{ tenant_id: string }>(
      `SELECT tenant_id FROM ${OUTBOX_TENANTS_FUNCTION}($1, $2) AS tenant_id`,
      [ageMs, TENANTS_PER_SWEEP],
    )
    const known = [...this.#producer.definedNames()]
    let relayed = 0
    let failure: unknown
    for (const { tenant_id: tenantId } of tenants) {
      try {
        relayed += await host.runAs(tenantId, SWEPT_TOKEN, (db) =>
          db.transaction(async (tx) => {
            const { rows } = await tx.query<OutboxRow>(
              `SELECT tenant_id, id, name, payload, options FROM ${OUTBOX_TABLE}
               WHERE tenant_id = $1 AND created_at < now() - make_interval(secs => $2) AND name = ANY($3::text[])
               ORDER BY created_at LIMIT ${ROWS_PER_TENANT} FOR UPDATE SKIP LOCKED`,
              [tenantId, ageMs / 1_000, known],
            )
            // A swept job cannot know how far its transaction's WAL reached: it reads the primary.
            await this.#producer.addRows(rows, SWEPT_TOKEN)
            if (rows.length > 0) await tx.query(DELETE_ROWS, [tenantId, rows.map((r) => r.id)])
            return rows.length
          }),
        )
      } catch (error) {
        // One tenant's failure does not stop the others'; the sweep reports it once it went through all.
        failure ??= error
      }
    }
    if (failure !== undefined) throw failure
    return relayed
  }

  /** Sweeps every `jobs.outboxSweepMs` (workers only); a failing sweep is logged and counted. */
  start(host: JobHost): void {
    if (this.#timer !== undefined || !this.#config.outbox) return
    const every = this.#config.outboxSweepMs
    this.#timer = setInterval(() => {
      if (this.#sweeping) return
      this.#sweeping = true
      this.sweep(host, every)
        .catch((error: unknown) => {
          this.#telemetry.sweepFailed(error)
          this.#logger?.warn(
            { err: error, signal: 'outbox_sweep_failed' },
            'keel jobs: outbox sweep failed; committed jobs wait in the outbox',
          )
        })
        .finally(() => {
          this.#sweeping = false
        })
    }, every)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
  }
}

/** The tenant's own rows only: RLS scopes it too, and the key's first column is the tenant. */
const DELETE_ROWS = `DELETE FROM ${OUTBOX_TABLE} WHERE tenant_id = $1 AND id = ANY($2::text[])`
