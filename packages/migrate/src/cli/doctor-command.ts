import type { Command } from 'commander'
import { type DoctorFlags, doctorOptionsFrom } from '../doctor/cli-options.js'
import { doctor } from '../doctor/doctor.js'
import { formatReport } from '../doctor/format-report.js'

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/**
 * `keel doctor`: exit 0 when no error was found (warnings too, unless --strict), 1 when one was, 2 when
 * the doctor could not run (bad options, unreachable database, unknown role).
 */
export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description("prove the database's tenant isolation: catalog rules and a rolled-back live probe")
    .option(
      '--connection <url>',
      "the owner's connection string (default: $KEEL_OWNER_URL, then $DATABASE_URL)",
    )
    .option('--runtime-role <role>', 'the role the app connects as')
    .option('--runtime-url <url>', "the runtime role's connection string, for the live probe")
    .option(
      '--mode <mode>',
      "tenancy mode: 'rls' or 'schema' ('database' needs keel.config.mjs: tenancy.resolve is a function)",
    )
    .option('--setting <name>', "rls: the tenant setting the policies read (default 'app.tenant_id')")
    .option('--tenant-column <name>', "the tenant column (default 'tenant_id')")
    .option(
      '--tenant-columns <table=column>',
      'a table whose tenant column has another name (repeatable)',
      collect,
    )
    .option(
      '--shared <table>',
      'a table shared by every tenant on purpose (repeatable, or comma-separated)',
      collect,
    )
    .option('--schemas <schema>', 'rls: inspect only these schemas (repeatable)', collect)
    .option(
      '--shared-schemas <schema>',
      'schema mode: schemas that are not tenant schemas (repeatable)',
      collect,
    )
    .option(
      '--tenants <id>',
      'schema and database modes: the tenants (schema default: every non-shared schema) (repeatable)',
      collect,
    )
    .option('--ignore <rule[:object]>', 'accept a finding on purpose (repeatable)', collect)
    .option('--no-probe', 'skip the live probe')
    .option('--config <file>', 'a keel.config.mjs (default: ./keel.config.mjs when it exists)')
    .option('--json', 'print the result as JSON')
    .option('--strict', 'exit 1 on warnings too')
    .action(async (flags: DoctorFlags & { json?: boolean; strict?: boolean }) => {
      try {
        const result = await doctor(await doctorOptionsFrom(flags, process.env))
        process.stdout.write(
          flags.json === true ? `${JSON.stringify(result, null, 2)}\n` : formatReport(result),
        )
        const failing = result.findings.some((f) => f.severity === 'error' || flags.strict === true)
        process.exitCode = failing ? 1 : 0
      } catch (error) {
        const e = error as { code?: string; message?: string }
        process.stderr.write(
          `keel doctor could not run: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(error)}\n`,
        )
        process.exitCode = 2
      }
    })
}
