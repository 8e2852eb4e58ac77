import { createKeel, type Keel, type KeelConfig } from '@keel/core'
import { readStack } from './stack.js'

type Overrides = Omit<Partial<KeelConfig>, 'postgres'> & {
  /** Which of the stack's replicas keel reads from. */
  replicas?: Array<'replica1' | 'replica2'>
  maxReplicaLagMs?: number
}

/** A keel instance on the stack's primary (and the replicas named), as the runtime role. */
export function testKeel({ replicas, maxReplicaLagMs, ...rest }: Overrides = {}): Keel {
  const stack = readStack()
  return createKeel({
    postgres: {
      primary: { connectionString: stack.primary.url },
      replicas: (replicas ?? []).map((name) => ({
        name,
        connectionString: stack.replicas.find((r) => r.name === name)!.url,
      })),
      ...(maxReplicaLagMs === undefined ? {} : { maxReplicaLagMs }),
      pool: { max: 4 },
    },
    ...rest,
  })
}
