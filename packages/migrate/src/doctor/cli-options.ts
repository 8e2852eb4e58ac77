import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { DoctorError } from './doctor-error.js'
import type { DoctorOptions } from './options.js'

export interface DoctorFlags {
  connection?: string
  runtimeRole?: string
  runtimeUrl?: string
  /** 'rls' or 'schema'; 'database' only with a config file that gives tenancy.resolve. */
  mode?: string
  setting?: string
  tenantColumn?: string
  tenantColumns?: string[]
  shared?: string[]
  schemas?: string[]
  sharedSchemas?: string[]
  tenants?: string[]
  probe?: boolean
  ignore?: string[]
  config?: string
}

const list = (v: string[] | undefined): string[] =>
  (v ?? []).flatMap((s) => s.split(',')).filter((s) => s !== '')

/**
 * Options from keel.config.mjs (its default export, or its `doctor` key), then flags over them; the
 * owner's URL from --connection, KEEL_OWNER_URL or DATABASE_URL.
 */
export async function doctorOptionsFrom(flags: DoctorFlags, env: NodeJS.ProcessEnv): Promise<DoctorOptions> {
  let base: Partial<DoctorOptions> = {}
  const file = resolve(flags.config ?? 'keel.config.mjs')
  if (flags.config !== undefined || existsSync(file)) {
    const mod = (await import(pathToFileURL(file).href)) as { default?: Record<string, unknown> }
    const config = mod.default ?? {}
    base = ((config.doctor as Partial<DoctorOptions> | undefined) ?? config) as Partial<DoctorOptions>
    if (base.tenancy === undefined && config.tenancy !== undefined)
      base = { ...base, tenancy: config.tenancy as DoctorOptions['tenancy'] }
  }
  const options: Record<string, unknown> = { ...base }
  const connection = flags.connection ?? env.KEEL_OWNER_URL ?? env.DATABASE_URL
  if (connection !== undefined) options.connection = connection
  if (flags.runtimeRole !== undefined) options.runtimeRole = flags.runtimeRole
  if (flags.runtimeUrl !== undefined) options.runtimeConnection = flags.runtimeUrl
  const configured = base.tenancy as { mode?: string } | undefined
  if (flags.mode !== undefined && !['rls', 'schema', 'database'].includes(flags.mode)) {
    throw new DoctorError(
      'KEEL_DOCTOR_CONFIG_INVALID',
      `--mode must be rls, schema or database (got ${JSON.stringify(flags.mode)})`,
      { details: { fields: ['mode'] } },
    )
  }
  if (flags.mode === 'database' && configured?.mode !== 'database') {
    // resolve is a function: no flag can carry it.
    throw new DoctorError(
      'KEEL_DOCTOR_CONFIG_INVALID',
      "--mode database needs a keel.config.mjs whose tenancy is { mode: 'database', resolve } (resolve is a function, which no flag can carry), and the fleet (tenants)",
      { details: { fields: ['mode', 'tenancy.resolve'] } },
    )
  }
  if (flags.mode !== undefined || flags.setting !== undefined || flags.sharedSchemas !== undefined) {
    const mode = flags.mode ?? configured?.mode ?? 'rls'
    const setting = flags.setting === undefined ? {} : { setting: flags.setting }
    options.tenancy =
      mode === 'schema'
        ? { mode, sharedSchemas: list(flags.sharedSchemas) }
        : mode === 'database'
          ? { ...(base.tenancy as object), ...setting }
          : { mode: 'rls', ...setting }
  }
  if (flags.tenantColumn !== undefined) options.tenantColumn = flags.tenantColumn
  if (flags.tenantColumns !== undefined) {
    options.tenantColumns = Object.fromEntries(
      list(flags.tenantColumns).map((pair) => {
        const at = pair.lastIndexOf('=')
        return [pair.slice(0, at), pair.slice(at + 1)]
      }),
    )
  }
  if (flags.shared !== undefined) options.sharedTables = list(flags.shared)
  if (flags.schemas !== undefined) options.schemas = list(flags.schemas)
  if (flags.tenants !== undefined) options.tenants = list(flags.tenants)
  if (flags.probe === false) options.probe = false
  if (flags.ignore !== undefined) {
    options.ignore = list(flags.ignore).map((s) => {
      const at = s.indexOf(':')
      return at < 0 ? { rule: s } : { rule: s.slice(0, at), object: s.slice(at + 1) }
    })
  }
  return options as DoctorOptions
}
