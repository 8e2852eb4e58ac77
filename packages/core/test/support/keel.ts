import { createKeel, type KeelConfig } from '../../src/index.js'
import { readStack } from './stack.js'

type PostgresConfig = KeelConfig['postgres']

type Overrides = Omit<Partial<KeelConfig>, 'postgres'> & {
  pool?: PostgresConfig['pool']
  timeoutGraceMs?: number
  closeTimeoutMs?: number
  connectionString?: string
  applicationName?: string
  statementCacheSize?: number
  safeFunctions?: string[]
  /** Which of the stack's replicas keel reads from. */
  replicas?: Array<'replica1' | 'replica2'>
  maxReplicaLagMs?: number
  replicaPollMs?: number
}

/** A keel instance on the stack's primary, as the runtime role. */
export function testKeel(overrides: Overrides = {}) {
  const {
    pool,
    connectionString,
    applicationName,
    statementCacheSize,
    safeFunctions,
    replicas,
    maxReplicaLagMs,
    replicaPollMs,
    timeoutGraceMs,
    closeTimeoutMs,
    ...rest
  } = overrides
  const stack = readStack()
  return createKeel({
    postgres: {
      primary: { connectionString: connectionString ?? stack.primary.url },
      replicas: (replicas ?? []).map((name) => ({
        name,
        connectionString: stack.replicas.find((r) => r.name === name)!.url,
      })),
      ...(maxReplicaLagMs === undefined ? {} : { maxReplicaLagMs }),
      ...(replicaPollMs === undefined ? {} : { replicaPollMs }),
      pool: { ...pool, max: pool?.max ?? 4 },
      ...(timeoutGraceMs === undefined ? {} : { timeoutGraceMs }),
      ...(closeTimeoutMs === undefined ? {} : { closeTimeoutMs }),
      ...(applicationName === undefined ? {} : { applicationName }),
      ...(statementCacheSize === undefined ? {} : { statementCacheSize }),
      ...(safeFunctions === undefined ? {} : { safeFunctions }),
    },
    ...rest,
  })
}
