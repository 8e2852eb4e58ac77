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

/**
 * The primary as the suites reach it: directly, or with `KEEL_TEST_PG=pgbouncer` through the stack's
 * PgBouncer 1.18 in transaction mode with PgBouncer's defaults, or `KEEL_TEST_PG=pgbouncer-prepared`
 * through PgBouncer 1.24 with max_prepared_statements (`stack.mjs up pgbouncer` first), so the same
 * suites prove keel's default config through a transaction pooler (issue #17).
 */
export function testPrimaryUrl(): string {
  const stack = readStack()
  const via = process.env.KEEL_TEST_PG ?? 'direct'
  if (via === 'direct') return stack.primary.url
  if (via !== 'pgbouncer' && via !== 'pgbouncer-prepared')
    throw new Error(`KEEL_TEST_PG must be direct, pgbouncer or pgbouncer-prepared (got ${via})`)
  if (stack.pgbouncer === undefined)
    throw new Error(`KEEL_TEST_PG=${via}: run \`node scripts/stack.mjs up pgbouncer\` first`)
  return via === 'pgbouncer' ? stack.pgbouncer.plain.url : stack.pgbouncer.prepared.url
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
      primary: { connectionString: connectionString ?? testPrimaryUrl() },
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
