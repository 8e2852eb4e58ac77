/** Where a backfill stands: after each batch, and while it waits for replica lag. */
export interface BackfillProgress {
  /** The table as given to ctx.backfill. */
  table: string
  /** Rows updated so far, over every run of this backfill. */
  rowsDone: number
  /** Rows at or below the start's max key (an estimate for big tables: pg_class.reltuples). */
  totalEstimate: number
  /** Batches committed so far, over every run. */
  batches: number
  /** Rows per second in this run. */
  rate: number
  /** Time left at this run's rate; undefined before the first batch of the run. */
  etaMs: number | undefined
  /** Set while the backfill waits for replica lag. */
  waiting?: { replica: string | null; lagMs: number; maxReplicaLagMs: number }
}
