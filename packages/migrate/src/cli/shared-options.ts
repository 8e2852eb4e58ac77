import type { Command } from 'commander'
import { type KeelConfig, loadConfig, migratorOptionsFrom } from '../config/load-config.js'
import type { MigrateEvent, MigratorOptions } from '../config/migrator-options.js'
import { createMigrator, type Migrator } from '../migrator/create-migrator.js'

/** The config of the whole program (its --config), for any command. */
export async function commandConfig(command: Command): Promise<KeelConfig> {
  const { config } = (command.optsWithGlobals() as { config?: string }).config
    ? await loadConfig({ file: (command.optsWithGlobals() as { config: string }).config })
    : await loadConfig()
  return config
}

export async function commandMigrator(
  command: Command,
  overrides: Partial<MigratorOptions>,
  onEvent: (event: MigrateEvent) => void,
): Promise<{ migrator: Migrator; config: KeelConfig }> {
  const config = await commandConfig(command)
  const options = { ...migratorOptionsFrom(config), ...overrides }
  const userOnEvent = options.onEvent
  const migrator = createMigrator({
    ...options,
    onEvent: (event) => {
      onEvent(event)
      userOnEvent?.(event)
    },
  })
  return { migrator, config }
}

export function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`)
  return n
}
