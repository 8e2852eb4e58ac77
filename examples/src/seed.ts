/** `node examples/dist/seed.js`: recreates the example's schema and seeds twenty tenants. */

import { createAppKeel } from './app/app-keel.js'
import { migrate } from './app/migrate.js'
import { forgetCachedViews, SEED_TENANTS, seed, waitForReplay } from './app/seed-data.js'
import { demoUrls } from './stack-urls.js'

const urls = demoUrls()
const started = performance.now()
await migrate(urls.ownerUrl)
const invoices = await seed(urls.ownerUrl)
// Raw pg wrote it, so no consistency token covers it: let the replicas catch up before anyone reads.
await waitForReplay(
  urls.appUrl,
  urls.replicas.map((r) => r.connectionString),
)
// Redis outlives a re-seed: drop what an earlier run cached.
const keel = createAppKeel(urls, { replicas: 'none' })
await forgetCachedViews(
  keel,
  SEED_TENANTS.map((t) => t.id),
)
await keel.close()
const seconds = ((performance.now() - started) / 1000).toFixed(1)
process.stdout.write(
  `seeded ${SEED_TENANTS.length} tenants, ${invoices.toLocaleString('en')} invoices in ${seconds} s\n`,
)
