import { createKeel, type KeelConfig } from '../../src/index.js'
import { readStack } from './stack.js'

type Overrides = Omit<Partial<KeelConfig>, 'postgres'> & {
  pool?: { max?: number }
  connectionString?: string
  applicationName?: string
  statementCacheSize?: number
}

/** A keel instance on the stack's primary, as the runtime role. */
export function testKeel(overrides: Overrides = {}) {
  const { pool, connectionString, applicationName, statementCacheSize, ...rest } = overrides
  return createKeel({
    postgres: {
      primary: { connectionString: connectionString ?? readStack().primary.url },
      pool: { max: pool?.max ?? 4 },
      ...(applicationName === undefined ? {} : { applicationName }),
      ...(statementCacheSize === undefined ? {} : { statementCacheSize }),
    },
    ...rest,
  })
}
