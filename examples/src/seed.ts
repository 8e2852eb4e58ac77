/** `node examples/dist/seed.js`: recreates the example's schema and seeds twenty tenants. */
import { migrate } from './app/migrate.js'
import { SEED_TENANTS, seed } from './app/seed-data.js'
import { demoUrls } from './stack-urls.js'

const { ownerUrl } = demoUrls()
const started = performance.now()
await migrate(ownerUrl)
const invoices = await seed(ownerUrl)
const seconds = ((performance.now() - started) / 1000).toFixed(1)
process.stdout.write(`seeded ${SEED_TENANTS.length} tenants, ${invoices.toLocaleString('en')} invoices in ${seconds} s\n`)
