import { existsSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { MigrateError } from '../errors.js'
import type { MigratorOptions } from './migrator-options.js'

/** What keel.config exports (its default export, or a function returning it): the migrator's options and any other command's (doctor's runtimeRole, ...). */
export type KeelConfig = Partial<MigratorOptions> & Record<string, unknown>

export interface LoadConfigOptions {
  /** Where to look for keel.config.{js,mjs,ts}. @default process.cwd() */
  cwd?: string
  /** An explicit config file (the CLI's --config). */
  file?: string
  /** @default process.env */
  env?: NodeJS.ProcessEnv
}

export interface LoadedConfig {
  /** The file read, or undefined when the config came from the environment alone. */
  file: string | undefined
  config: KeelConfig
}

const NAMES = ['keel.config.js', 'keel.config.mjs', 'keel.config.ts']

/**
 * Reads keel.config.{js,mjs,ts} (default export: the config, or a function returning it) and fills what it
 * leaves out from the environment: KEEL_MIGRATE_URL (or DATABASE_URL), KEEL_MIGRATIONS_DIR, KEEL_TENANCY_MODE
 * (rls | schema), KEEL_TENANTS (comma-separated), KEEL_LOCK_TIMEOUT_MS, KEEL_MIGRATE_CONCURRENCY.
 * A relative `dir` is resolved against the config file's folder. A .ts config needs a Node that strips
 * types (22.18+) or a loader such as tsx; otherwise use .js/.mjs.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const cwd = options.cwd ?? process.cwd()
  const env = options.env ?? process.env
  const file =
    options.file !== undefined
      ? resolve(cwd, options.file)
      : NAMES.map((n) => resolve(cwd, n)).find((path) => existsSync(path))
  let config: KeelConfig = {}
  if (file !== undefined) {
    if (!existsSync(file))
      throw new MigrateError('KEEL_MIGRATE_CONFIG_INVALID', `config file ${file} not found`)
    let mod: { default?: unknown }
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown }
    } catch (error) {
      const hint =
        (error as { code?: string }).code === 'ERR_UNKNOWN_FILE_EXTENSION'
          ? ' (this Node cannot load .ts: use Node 22.18+, run through tsx, or rename it .mjs)'
          : ''
      throw new MigrateError(
        'KEEL_MIGRATE_CONFIG_INVALID',
        `could not load ${file}${hint}: ${(error as Error).message}`,
        {
          cause: error,
        },
      )
    }
    const exported = typeof mod.default === 'function' ? await (mod.default as () => unknown)() : mod.default
    if (exported === null || typeof exported !== 'object') {
      throw new MigrateError(
        'KEEL_MIGRATE_CONFIG_INVALID',
        `${file} must export default a config object (or a function returning one)`,
      )
    }
    config = { ...(exported as KeelConfig) }
  }
  const base = file === undefined ? cwd : resolve(file, '..')
  const url = env.KEEL_MIGRATE_URL ?? env.DATABASE_URL
  if (config.connection === undefined && url) config.connection = { connectionString: url }
  config.dir ??= env.KEEL_MIGRATIONS_DIR ?? 'migrations'
  if (!isAbsolute(config.dir)) config.dir = resolve(base, config.dir)
  if (config.tenancy === undefined && env.KEEL_TENANCY_MODE) {
    config.tenancy = { mode: env.KEEL_TENANCY_MODE } as KeelConfig['tenancy']
  }
  if (config.tenants === undefined && env.KEEL_TENANTS) {
    config.tenants = env.KEEL_TENANTS.split(',')
      .map((t) => t.trim())
      .filter((t) => t.length > 0)
  }
  const int = (value: string | undefined) => (value === undefined || value === '' ? undefined : Number(value))
  config.lockTimeoutMs ??= int(env.KEEL_LOCK_TIMEOUT_MS)
  config.concurrency ??= int(env.KEEL_MIGRATE_CONCURRENCY)
  for (const key of ['lockTimeoutMs', 'concurrency'] as const)
    if (config[key] === undefined) delete config[key]
  if (config.connection === undefined) {
    throw new MigrateError(
      'KEEL_MIGRATE_CONFIG_INVALID',
      `no database connection: add \`connection\` to keel.config.{js,mjs,ts} (looked in ${cwd}) or set KEEL_MIGRATE_URL`,
    )
  }
  return { file, config }
}

const MIGRATOR_KEYS = [
  'connection',
  'dir',
  'tenancy',
  'tenants',
  'lockTimeoutMs',
  'maxLockWaitMs',
  'statementTimeoutMs',
  'concurrentStatementTimeoutMs',
  'concurrency',
  'canary',
  'scopeLockWaitMs',
  'lint',
  'tenantConnection',
  'maintenanceDatabase',
  'onEvent',
  'maxReplicaLagMs',
  'pauseBetweenTenantsMs',
] as const

/** The migrator's options out of a keel.config (which may also hold other commands' options). */
export function migratorOptionsFrom(config: KeelConfig): MigratorOptions {
  const picked: Record<string, unknown> = {}
  for (const key of MIGRATOR_KEYS) if (config[key] !== undefined) picked[key] = config[key]
  return picked as unknown as MigratorOptions
}
