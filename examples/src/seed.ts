/** `node examples/dist/seed.js`: recreates the example's schema and seeds twenty tenants. */

import { prepareExampleData } from './app/prepare-data.js'
import { SEED_TENANTS } from './app/seed-data.js'
import { demoUrls } from './stack-urls.js'

const started = performance.now()
const invoices = await prepareExampleData(demoUrls())
const seconds = ((performance.now() - started) / 1000).toFixed(1)
process.stdout.write(
  `seeded ${SEED_TENANTS.length} tenants, ${invoices.toLocaleString('en')} invoices in ${seconds} s\n`,
)
