import type { Cluster } from '../routing/cluster.js'
import type { TenancyStrategy } from '../tenancy/tenancy-strategy.js'

/**
 * Where one tenant lives and how its statements are scoped (ADR 0032): what a session is served
 * through. The session never asks whether the tenant is shared or dedicated; it sends its batches to
 * `cluster` with `scope`'s prelude.
 */
export interface Placement {
  /** The primary and replicas of the tenant's database, with their routing. */
  readonly cluster: Cluster
  /** rls (the setting), schema (search_path) or database (nothing: the database is the boundary). */
  readonly scope: TenancyStrategy
  /** `address:port/database` (+ `#schema`): identity for telemetry and health. */
  readonly key: string
}
