import { createKeel, type Keel } from '@keel/core'
import { readStack } from './stack.js'

/**
 * keel on the stack as the runtime role. `lagged`: reads may go to replica2 only, which replays 1.5 s
 * late, so a read-your-writes test fails unless the session's token holds the read back.
 */
export function ormKeel({ lagged = false }: { lagged?: boolean } = {}): Keel {
  const stack = readStack()
  const replica2 = stack.replicas.find((r) => r.name === 'replica2')!
  return createKeel({
    postgres: {
      primary: { connectionString: stack.primary.url },
      replicas: lagged ? [{ name: 'replica2', connectionString: replica2.url }] : [],
      // replica2 is 1.5 s behind by design: keep it in rotation.
      ...(lagged ? { maxReplicaLagMs: 60_000 } : {}),
      pool: { max: 6 },
    },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
  })
}
