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
      'database mode not yet',
      {
        postgres: { primary: { connectionString: url } },
        tenancy: { mode: 'database', resolve: () => ({}) },
      },
      'tenancy',
    ],
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
        keepAliveInitialDelayMillis: 10_000,
      })
      expect(keel.config.postgres).toMatchObject({ timeoutGraceMs: 2_000, closeTimeoutMs: 30_000 })
      expect(keel.config.tenancy).toEqual({ mode: 'rls', setting: 'app.tenant_id', allowBypassRole: false })
      expect(keel.config.limits).toMatchObject({
        tenantConnections: 0.5,
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

  it("accepts pg's query_timeout and keepAlive options in postgres.pool", async () => {
    const keel = createKeel({
      postgres: {
        primary: { connectionString: url },
        pool: { query_timeout: 5_000, keepAlive: false, keepAliveInitialDelayMillis: 0 },
      },
    })
    expect(keel.config.postgres.pool).toMatchObject({
      query_timeout: 5_000,
      keepAlive: false,
      keepAliveInitialDelayMillis: 0,
    })
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
