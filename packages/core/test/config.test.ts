import { describe, expect, it } from 'vitest'
import { createKeel, KeelError } from '../src/index.js'

const url = 'postgres://keel_app:s3cr3t-pa55@127.0.0.1:5999/keel'

function configError(config: unknown): KeelError {
  try {
    createKeel(config as never)
  } catch (error) {
    expect(error).toBeInstanceOf(KeelError)
    return error as KeelError
  }
  throw new Error('createKeel accepted an invalid config')
}

describe('createKeel config', () => {
  it.each([
    ['no postgres', {}, 'postgres'],
    ['no primary', { postgres: {} }, 'postgres.primary'],
    [
      'not a postgres URL',
      { postgres: { primary: { connectionString: 'mysql://u:s3cr3t-pa55@h/db' } } },
      'postgres.primary.connectionString',
    ],
    ['neither host nor URL', { postgres: { primary: { password: 's3cr3t-pa55' } } }, 'postgres.primary'],
    [
      'bad port',
      { postgres: { primary: { host: 'h', port: 70_000, password: 's3cr3t-pa55' } } },
      'postgres.primary.port',
    ],
    [
      'pool.max zero',
      { postgres: { primary: { connectionString: url }, pool: { max: 0 } } },
      'postgres.pool.max',
    ],
    ['unknown key (typo)', { postgres: { primary: { connectionString: url }, pol: { max: 3 } } }, 'postgres'],
    [
      'bad tenancy mode',
      { postgres: { primary: { connectionString: url } }, tenancy: { mode: 'magic' } },
      'tenancy.mode',
    ],
    [
      'bad setting name',
      { postgres: { primary: { connectionString: url } }, tenancy: { mode: 'rls', setting: "x'; drop" } },
      'tenancy.setting',
    ],
    [
      'schemaFor not a function',
      { postgres: { primary: { connectionString: url } }, tenancy: { mode: 'schema', schemaFor: 'tenant_' } },
      'tenancy.schemaFor',
    ],
    [
      'database mode without a resolver',
      {
        postgres: { primary: { connectionString: url } },
        tenancy: { mode: 'database', resolve: 'postgres://x:s3cr3t-pa55@h/db' },
      },
      'tenancy.resolve',
    ],
    [
      'database mode with replicas in postgres (they come from resolve)',
      {
        postgres: { primary: { connectionString: url }, replicas: [{ connectionString: url }] },
        tenancy: { mode: 'database', resolve: () => null },
      },
      'postgres.replicas',
    ],
    ['rls mode without a primary', { postgres: {} }, 'postgres.primary'],
    [
      'negative limit',
      { postgres: { primary: { connectionString: url } }, limits: { tenantConnections: -1 } },
      'limits.tenantConnections',
    ],
    [
      'idPattern not a RegExp',
      { postgres: { primary: { connectionString: url } }, tenants: { idPattern: '.*' } },
      'tenants.idPattern',
    ],
    ['logger without methods', { postgres: { primary: { connectionString: url } }, logger: {} }, 'logger'],
    [
      'queryText unknown',
      { postgres: { primary: { connectionString: url } }, telemetry: { queryText: 'all' } },
      'telemetry.queryText',
    ],
  ])('%s -> KEEL_CONFIG_INVALID naming the field, never the password', (_name, config, field) => {
    const error = configError(config)
    expect(error.code).toBe('KEEL_CONFIG_INVALID')
    expect(error.message).toContain(field)
    expect(error.details.fields).toEqual(expect.arrayContaining([expect.stringContaining(field)]))
    expect(error.message).not.toContain('s3cr3t-pa55')
    expect(JSON.stringify(error.details)).not.toContain('s3cr3t-pa55')
    expect(error.stack ?? '').not.toContain('s3cr3t-pa55')
  })

  it('applies documented defaults and freezes the result', async () => {
    const keel = createKeel({ postgres: { primary: { connectionString: url } } })
    try {
      expect(keel.config.postgres.pool).toEqual({
        max: 10,
        idleTimeoutMs: 10_000,
        connectionTimeoutMs: 5_000,
        maxUses: 0,
        keepAlive: true,
        keepAliveInitialDelayMs: 10_000,
      })
      expect(keel.config.postgres).toMatchObject({ timeoutGraceMs: 2_000, closeTimeoutMs: 30_000 })
      expect(keel.config.tenancy).toEqual({ mode: 'rls', setting: 'app.tenant_id', allowBypassRole: false })
      expect(keel.config.limits).toMatchObject({
        // { share: 0.5 } of pool.max 10, resolved to a count
        tenantConnections: 5,
        acquireTimeoutMs: 5_000,
        statementTimeoutMs: 30_000,
      })
      expect(keel.config.telemetry.queryText).toBe('sanitized')
      expect(Object.isFrozen(keel.config)).toBe(true)
      expect(Object.isFrozen(keel.config.postgres.pool)).toBe(true)
      expect(() => {
        ;(keel.config.postgres.pool as { max: number }).max = 99
      }).toThrow(TypeError)
    } finally {
      await keel.close()
    }
  })

  it("accepts pg's spellings of the pool options as aliases of keel's *Ms names", async () => {
    const keel = createKeel({
      postgres: {
        primary: { connectionString: url },
        pool: {
          query_timeout: 5_000,
          keepAlive: false,
          keepAliveInitialDelayMillis: 0,
          idleTimeoutMillis: 1_234,
          connectionTimeoutMillis: 2_345,
        },
      },
    })
    expect(keel.config.postgres.pool).toEqual({
      max: 10,
      maxUses: 0,
      queryTimeoutMs: 5_000,
      keepAlive: false,
      keepAliveInitialDelayMs: 0,
      idleTimeoutMs: 1_234,
      connectionTimeoutMs: 2_345,
    })
    await keel.close()
  })

  it('refuses an option given under both its keel name and its pg alias', () => {
    const error = configError({
      postgres: { primary: { connectionString: url }, pool: { idleTimeoutMs: 1, idleTimeoutMillis: 2 } },
    })
    expect(error.message).toContain('postgres.pool.idleTimeoutMillis: give idleTimeoutMs or its alias')
  })

  it.each([
    ['{ share }', { share: 0.25 }, 5],
    ['{ share: 1 } is the whole pool', { share: 1 }, 20],
    ['a tiny share still gets one connection', { share: 0.01 }, 1],
    ['{ max }', { max: 3 }, 3],
    ['{ max } above pool.max is capped', { max: 50 }, 20],
    ['old form: a number below 1 is a share', 0.25, 5],
    ['old form: a number from 1 up is a count', 1, 1],
  ])('limits.tenantConnections %s resolves to a count of connections', async (_, value, count) => {
    const keel = createKeel({
      postgres: { primary: { connectionString: url }, pool: { max: 20 } },
      limits: {
        tenantConnections: value,
        forTenant: (id) => (id === 'big' ? { tenantConnections: value } : undefined),
      },
    })
    expect(keel.config.limits.tenantConnections).toBe(count)
    expect(keel.config.limits.forTenant?.('big')?.tenantConnections).toBe(count)
    expect(keel.config.limits.forTenant?.('small')).toBeUndefined()
    await keel.close()
  })

  it('refuses a tenantConnections share above 1 and a forTenant override that is not a TenantConnections', async () => {
    expect(
      configError({
        postgres: { primary: { connectionString: url } },
        limits: { tenantConnections: { share: 2 } },
      }).details.fields,
    ).toEqual(['limits.tenantConnections.share'])
    const keel = createKeel({
      postgres: { primary: { connectionString: url } },
      limits: { forTenant: () => ({ tenantConnections: { max: 0 } }) },
    })
    expect(() => keel.config.limits.forTenant?.('acme')).toThrow(
      expect.objectContaining({ code: 'KEEL_CONFIG_INVALID' }),
    )
    await keel.close()
  })

  it('opens no connection at construction (an unreachable host fails at the first query, not before)', async () => {
    const keel = createKeel({
      postgres: { primary: { connectionString: 'postgres://u:s3cr3t-pa55@127.0.0.1:1/db' } },
    })
    const failure = await keel
      .tenant('acme')
      .query('SELECT 1')
      .catch((e: unknown) => e)
    expect(String((failure as Error).message)).not.toContain('s3cr3t-pa55')
    await keel.close()
  })
})
