import type { DemoUrls } from '../stack-urls.js'
import { createAppKeel } from './app-keel.js'
import { migrate } from './migrate.js'
import { forgetCachedViews, SEED_TENANTS, type SeedTenant, seed, waitForReplay } from './seed-data.js'

/**
 * A fresh example dataset, ready to read: the schema recreated, the tenants seeded, every replica caught
 * up (raw pg wrote the seed, so no consistency token covers it) and what an earlier run cached for these
 * tenants dropped (Redis outlives a re-seed). Returns the number of invoices written.
 */
export async function prepareExampleData(
  urls: DemoUrls,
  tenants: readonly SeedTenant[] = SEED_TENANTS,
  alsoForget: readonly string[] = [],
): Promise<number> {
  await migrate(urls.ownerUrl)
  const invoices = await seed(urls.ownerUrl, tenants)
  await waitForReplay(
    urls.appUrl,
    urls.replicas.map((r) => r.connectionString),
  )
  const keel = createAppKeel(urls, { replicas: 'none' })
  try {
    await forgetCachedViews(keel, [...tenants.map((t) => t.id), ...alsoForget])
  } finally {
    await keel.close()
  }
  return invoices
}
