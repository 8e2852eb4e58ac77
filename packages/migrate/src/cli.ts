#!/usr/bin/env node
import { Command } from 'commander'
import { registerDoctorCommand } from './cli/doctor-command.js'
import { registerExportCommand } from './cli/export-command.js'
import { registerMigrateCommand } from './cli/migrate-command.js'
import { registerTenantsCommand } from './cli/tenants-command.js'
import { isMigrateError } from './errors.js'

// The `keel` bin: one file per command group under cli/ registers its commands here.
const program = new Command('keel')
  .description(
    'keel owner-side tooling: lock-safe fleet migrations, tenant provisioning, and the tenant-isolation doctor',
  )
  .option(
    '-c, --config <file>',
    'config file (default: keel.config.{js,mjs,ts} in the current folder, then env)',
  )
  .showHelpAfterError()

registerMigrateCommand(program)
registerTenantsCommand(program)
registerDoctorCommand(program)
registerExportCommand(program)

program.parseAsync(process.argv).catch((error: unknown) => {
  if (isMigrateError(error)) process.stderr.write(`keel: ${error.code}: ${error.message}\n`)
  else process.stderr.write(`keel: ${(error as Error).stack ?? String(error)}\n`)
  process.exitCode = 1
})
