import type { Keel } from '@keel/core'
import pg from 'pg'
import { DASHBOARD_TAG, TENANT_EXISTS_KEY } from './invoices.js'
import { TENANT_SETTING } from './migrate.js'

export interface SeedTenant {
  id: string
  name: string
  plan: 'free' | 'team' | 'enterprise'
  invoices: number
}

/**
 * Twenty tenants of very different sizes, as a real SaaS has: one enterprise tenant with 120k invoices,
 * a few teams with thousands, a long tail of small free accounts.
 */
export const SEED_TENANTS: readonly SeedTenant[] = [
  { id: 'megacorp', name: 'MegaCorp Industries', plan: 'enterprise', invoices: 120_000 },
  { id: 'acme', name: 'Acme', plan: 'team', invoices: 8_000 },
  { id: 'globex', name: 'Globex', plan: 'team', invoices: 5_000 },
  { id: 'initech', name: 'Initech', plan: 'team', invoices: 2_500 },
  { id: 'umbrella', name: 'Umbrella', plan: 'team', invoices: 1_200 },
  { id: 'hooli', name: 'Hooli', plan: 'team', invoices: 900 },
  { id: 'stark', name: 'Stark', plan: 'team', invoices: 600 },
  { id: 'wayne', name: 'Wayne', plan: 'free', invoices: 400 },
  { id: 'wonka', name: 'Wonka', plan: 'free', invoices: 250 },
  { id: 'tyrell', name: 'Tyrell', plan: 'free', invoices: 180 },
  { id: 'cyberdyne', name: 'Cyberdyne', plan: 'free', invoices: 120 },
  { id: 'soylent', name: 'Soylent', plan: 'free', invoices: 90 },
  { id: 'oscorp', name: 'Oscorp', plan: 'free', invoices: 60 },
  { id: 'vandelay', name: 'Vandelay', plan: 'free', invoices: 40 },
  { id: 'dunder', name: 'Dunder Mifflin', plan: 'free', invoices: 25 },
  { id: 'pied-piper', name: 'Pied Piper', plan: 'free', invoices: 15 },
  { id: 'bluth', name: 'Bluth', plan: 'free', invoices: 10 },
  { id: 'gringotts', name: 'Gringotts', plan: 'free', invoices: 6 },
  { id: 'monsters', name: 'Monsters Inc', plan: 'free', invoices: 3 },
  { id: 'newco', name: 'NewCo', plan: 'free', invoices: 0 },
]

/**
 * Seeds as the owner role, one transaction per tenant with the tenant setting on, so the rows pass
 * the same row-level security policies the app does (FORCE applies to the owner too).
 */
export async function seed(ownerUrl: string, tenants: readonly SeedTenant[] = SEED_TENANTS): Promise<number> {
  const owner = new pg.Client({ connectionString: ownerUrl })
  await owner.connect()
  let total = 0
  try {
    for (const t of tenants) {
      await owner.query('BEGIN')
      await owner.query('SELECT set_config($1, $2, true)', [TENANT_SETTING, t.id])
      await owner.query('INSERT INTO tenants (id, name, plan) VALUES ($1, $2, $3)', [t.id, t.name, t.plan])
      // Deterministic but varied: amounts, customers, statuses and dates from the row number.
      await owner.query(
        `INSERT INTO invoices (tenant_id, number, customer, amount_cents, status, issued_on, created_at)
         SELECT $1,
                upper($1) || '-' || lpad(i::text, 6, '0'),
                'Customer ' || (1 + (i * 7919) % 50),
                1000 + (i * 104729) % 250000,
                CASE WHEN i % 10 < 6 THEN 'paid' WHEN i % 10 < 9 THEN 'open' ELSE 'void' END,
                current_date - ((i * 31) % 365)::int,
                now() - make_interval(secs => ($2::int - i)::int * 60)
           FROM generate_series(1, $2::bigint) AS i`,
        [t.id, t.invoices],
      )
      await owner.query('COMMIT')
      total += t.invoices
    }
    await owner.query('ANALYZE tenants, invoices')
  } catch (error) {
    await owner.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    await owner.end()
  }
  return total
}

/**
 * The cache (Redis) outlives a re-seed: after one, drop what an earlier run cached for these tenants, so
 * no dashboard or tenant check from the old data is served.
 */
export async function forgetCachedViews(keel: Keel, tenantIds: readonly string[]): Promise<void> {
  await Promise.all(
    tenantIds.map((id) => keel.tenant(id).invalidate({ tags: [DASHBOARD_TAG], keys: [TENANT_EXISTS_KEY] })),
  )
}

/**
 * Waits until every replica has replayed the primary's WAL as of now: the seed wrote with raw pg, so no
 * consistency token covers it, and a read right after it could otherwise see the empty tables.
 */
export async function waitForReplay(
  primaryUrl: string,
  replicaUrls: readonly string[],
  timeoutMs = 30_000,
): Promise<void> {
  const primary = new pg.Client({ connectionString: primaryUrl })
  await primary.connect()
  let target: string
  try {
    target = (await primary.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn
  } finally {
    await primary.end()
  }
  const deadline = Date.now() + timeoutMs
  for (const url of replicaUrls) {
    const replica = new pg.Client({ connectionString: url })
    await replica.connect()
    try {
      for (;;) {
        const r = await replica.query<{ done: boolean }>(
          'SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, true) AS done',
          [target],
        )
        if (r.rows[0]!.done) break
        if (Date.now() > deadline)
          throw new Error(`a replica did not replay ${target} within ${timeoutMs} ms`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    } finally {
      await replica.end()
    }
  }
}
