import { createKeel, type Keel } from '@keel/core'
import type { DemoUrls } from '../stack-urls.js'
import { defineAppJobs } from './app-jobs.js'
import { TENANT_SETTING } from './migrate.js'

export interface AppKeelOptions {
  /**
   * Which replicas reads may use: 'all', only the stack's 1.5 s-delayed one ('lagged', so
   * read-your-writes is visible), or 'none'.
   */
  replicas?: 'all' | 'lagged' | 'none'
  poolMax?: number
  /** The BullMQ queue (tests use their own). @default 'keel-example' */
  queue?: string
}

/** One keel per process, shared by the web app and the worker: the same config, the same jobs. */
export function createAppKeel(urls: DemoUrls, options: AppKeelOptions = {}): Keel {
  const which = options.replicas ?? 'all'
  const replicas =
    which === 'none'
      ? []
      : which === 'lagged'
        ? urls.replicas.filter((r) => r.name === 'replica2')
        : urls.replicas
  const redis = urls.redisUrl === undefined ? undefined : { url: urls.redisUrl }
  const keel = createKeel({
    postgres: {
      primary: { connectionString: urls.appUrl },
      replicas,
      pool: { max: options.poolMax ?? 20 },
      applicationName: 'keel-example',
    },
    tenancy: { mode: 'rls', setting: TENANT_SETTING },
    // An enterprise tenant's report may hold at most half the connections; others keep the rest.
    limits: { tenantConnections: 0.5, acquireTimeoutMs: 2_000, statementTimeoutMs: 15_000 },
    ...(redis === undefined
      ? {}
      : {
          cache: { redis, ttlMs: 30_000, staleMs: 30_000, graceMs: 300_000 },
          jobs: { redis, queue: options.queue ?? 'keel-example', outbox: true, tenantConcurrency: 2 },
        }),
  })
  defineAppJobs(keel)
  return keel
}
