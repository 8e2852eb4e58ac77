import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { DoctorOptions } from './options.js'

export interface DoctorFlags {
  connection?: string
  runtimeRole?: string
  runtimeUrl?: string
  mode?: 'rls' | 'schema'
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
  if (flags.mode !== undefined || flags.setting !== undefined || flags.sharedSchemas !== undefined) {
    const mode = flags.mode ?? (base.tenancy as { mode?: string } | undefined)?.mode ?? 'rls'
    options.tenancy =
      mode === 'schema'
        ? { mode, sharedSchemas: list(flags.sharedSchemas) }
        : { mode: 'rls', ...(flags.setting === undefined ? {} : { setting: flags.setting }) }
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
