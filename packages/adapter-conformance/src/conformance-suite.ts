import type { Keel } from '@keel/core'
import { afterAll, beforeAll, describe } from 'vitest'
import { ITEMS_TABLE } from './conformance-routes.js'
import { type AppSetup, type Client, clientFor, type MakeApp } from './suite/harness.js'
import { health } from './suite/health-routes.js'
import { spans } from './suite/http-spans.js'
import { readYourWrites } from './suite/read-your-writes.js'
import { overload, requestScope } from './suite/request-scope.js'
import { tenantResolution } from './suite/tenant-resolution.js'
import { awaitOnReplicas, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'

export type { AdapterApp, AppSetup, MakeApp } from './suite/harness.js'

/**
 * The behaviour every keel HTTP adapter must have, against the real stack, through both an in-process
 * inject and real sockets. `makeApp` builds the adapter's app with the routes of conformance-routes.ts.
 */
export function describeAdapter(name: string, makeApp: MakeApp): void {
  describe(name, () => {
    let keel: Keel

    beforeAll(async () => {
      await createRlsTable(ITEMS_TABLE)
      await awaitOnReplicas(ITEMS_TABLE)
      keel = testKeel()
    })
    afterAll(async () => {
      await keel.close()
      await dropTable(ITEMS_TABLE)
    })

    for (const transport of ['inject', 'socket'] as const) {
      describe(`through ${transport === 'inject' ? 'inject()' : 'a real socket'}`, () => {
        const withApp = async (
          setup: Omit<AppSetup, 'keel' | 'prefix'> & { keel?: Keel; prefix?: string },
          run: (client: Client) => Promise<void>,
        ) => {
          const app = await makeApp({ keel, prefix: '', ...setup })
          try {
            await run(await clientFor(app, transport))
          } finally {
            await app.close()
          }
        }
        tenantResolution(() => keel, withApp)
        requestScope(withApp)
        overload(withApp)
        readYourWrites(withApp)
        health(withApp)
        spans(transport, withApp)
      })
    }
  })
}
