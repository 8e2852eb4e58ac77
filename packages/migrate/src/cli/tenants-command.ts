import type { Command } from 'commander'
import { MigrateError } from '../errors.js'
import { FleetProgress } from './fleet-progress.js'
import { commandMigrator } from './shared-options.js'

/** `keel tenants provision | deprovision`. */
export function registerTenantsCommand(program: Command): void {
  const tenants = program
    .command('tenants')
    .description('create or retire a tenant scope (schema or database)')

  tenants
    .command('provision <id>')
    .description(
      'create the tenant schema (schema mode) or database (database mode) and run tenant/ migrations',
    )
    .option('--template <database>', 'database mode: CREATE DATABASE ... TEMPLATE this database')
    .option(
      '--runtime-role <role>',
      "database mode: the app's role; the new database admits it, not PUBLIC (CONNECT, TEMPORARY, USAGE on public)",
    )
    .action(async (id: string, opts: { template?: string; runtimeRole?: string }, command: Command) => {
      const progress = new FleetProgress()
      const { migrator } = await commandMigrator(command, {}, progress.handle)
      try {
        const result = await migrator.provision(id, {
          ...(opts.template ? { template: opts.template } : {}),
          ...(opts.runtimeRole ? { runtimeRole: opts.runtimeRole } : {}),
        })
        progress.summary(result)
        if (result.failed.length > 0) process.exitCode = 1
      } finally {
        await migrator.close()
      }
    })

  tenants
    .command('deprovision <id>')
    .description('archive (rename, keep the data) or drop the tenant schema or database; --mode is required')
    .option('--mode <mode>', 'archive | drop')
    .action(async (id: string, opts: { mode?: string }, command: Command) => {
      if (opts.mode !== 'archive' && opts.mode !== 'drop') {
        throw new MigrateError(
          'KEEL_MIGRATE_DEPROVISION_MODE_REQUIRED',
          'keel tenants deprovision needs --mode archive (rename, keep the data) or --mode drop (delete it)',
        )
      }
      const { migrator } = await commandMigrator(command, {}, () => undefined)
      try {
        const done = await migrator.deprovision(id, { mode: opts.mode })
        process.stdout.write(
          done.archivedAs === undefined
            ? `tenant ${id} dropped\n`
            : `tenant ${id} archived as ${done.archivedAs}\n`,
        )
      } finally {
        await migrator.close()
      }
    })
}
