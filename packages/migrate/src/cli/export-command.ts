import { pipeline } from 'node:stream/promises'
import { createKeel, type ExportProgressEvent, fileSink, isKeelError, KeelError } from '@keel/core'
import type { Command } from 'commander'
import { z } from 'zod'
import { MigrateError } from '../errors.js'
import { commandConfig } from './shared-options.js'

const argsSchema = z.strictObject({
  tenant: z.string().min(1),
  tables: z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t.length > 0),
    )
    .pipe(z.array(z.string()).min(1, 'name at least one table')),
  format: z.enum(['ndjson', 'csv']),
  out: z.string().min(1),
  url: z.string().min(1).optional(),
  batchSize: z.coerce.number().int().min(1).max(100_000).optional(),
  maxRowsPerSecond: z.coerce.number().positive().finite().optional(),
  quiet: z.boolean().optional(),
})

/**
 * `keel export --tenant <id> --tables a,b --format ndjson --out file`: one tenant's rows to a file (or
 * `-` for stdout) through @keel/core's db.export(): one snapshot, the tenant's scope as the app sees it
 * (ADR 0046). It connects as the app's runtime role (`--url`, `exportConnection` in keel.config or
 * KEEL_EXPORT_URL), never the owner connection the migrations use: in rls mode an owner or a superuser
 * is not held by the policies, so it would export every tenant's rows. The file appears only when
 * complete (fileSink: temp file, fsync, rename).
 */
export function registerExportCommand(program: Command): void {
  program
    .command('export')
    .description("export one tenant's rows of some tables to a file (ndjson or csv), from one snapshot")
    .requiredOption('--tenant <id>', 'the tenant to export')
    .requiredOption('--tables <a,b>', 'comma-separated unqualified table names, exported in this order')
    .option('--format <format>', 'ndjson | csv (csv: one table)', 'ndjson')
    .requiredOption('--out <file>', 'the file to write (replaced atomically when done), or - for stdout')
    .option('--url <connectionString>', "the app's runtime role (default: exportConnection, KEEL_EXPORT_URL)")
    .option('--batch-size <n>', 'accepted, no effect: an export reads through COPY')
    .option('--max-rows-per-second <n>', 'pace the export (the server waits between bursts); default unpaced')
    .option('-q, --quiet', 'no progress on stderr')
    .action(async (opts: Record<string, unknown>, command: Command) => {
      try {
        await runExport(opts, command)
      } catch (error) {
        // MigrateErrors are printed by cli.ts; keel's own errors the same way here.
        if (!isKeelError(error)) throw error
        process.stderr.write(`keel: ${error.code}: ${error.message}\n`)
        process.exitCode = 1
      }
    })
}

async function runExport(opts: Record<string, unknown>, command: Command): Promise<void> {
  const parsed = argsSchema.safeParse(opts)
  if (!parsed.success) {
    throw new KeelError(
      'KEEL_QUERY_INVALID',
      `keel export: ${parsed.error.issues.map((i) => `--${flag(i.path.join('.'))}: ${i.message}`).join('; ')}`,
    )
  }
  const args = parsed.data
  const config = await commandConfig(command)
  const exportConnection = config.exportConnection as { connectionString?: string } | undefined
  const connectionString = args.url ?? exportConnection?.connectionString ?? process.env.KEEL_EXPORT_URL
  if (connectionString === undefined || connectionString === '') {
    throw new MigrateError(
      'KEEL_MIGRATE_CONFIG_INVALID',
      "keel export reads as the app's runtime role: pass --url, or set exportConnection in keel.config or KEEL_EXPORT_URL",
    )
  }
  if (config.tenancy === undefined) {
    throw new MigrateError('KEEL_MIGRATE_CONFIG_INVALID', 'keel export needs `tenancy` in keel.config')
  }
  const keel = createKeel({
    postgres: { primary: { connectionString }, applicationName: 'keel-export-cli' },
    tenancy: config.tenancy as never,
  })
  const started = Date.now()
  // Ctrl-C ends the transaction and deletes the temp file instead of leaving them to the process exit.
  const interrupted = new AbortController()
  const interrupt = () => interrupted.abort()
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  try {
    const db = keel.tenant(args.tenant)
    const out = db.export({
      tables: args.tables,
      format: args.format,
      ...(args.batchSize === undefined ? {} : { batchSize: args.batchSize }),
      ...(args.maxRowsPerSecond === undefined ? {} : { maxRowsPerSecond: args.maxRowsPerSecond }),
    })
    let rows = 0
    let shown = 0
    out.on('progress', (event: ExportProgressEvent) => {
      rows = event.rows
      if (args.quiet !== true && Date.now() - shown >= 1_000) {
        shown = Date.now()
        process.stderr.write(`keel export: ${rows} rows (${event.table})\n`)
      }
    })
    const sink =
      args.out === '-'
        ? process.stdout
        : await fileSink(args.out)({
            tenantId: args.tenant,
            jobId: 'cli',
            attempt: 1,
            payload: { tables: args.tables, format: args.format },
            signal: interrupted.signal,
          })
    await pipeline(out, sink, { end: args.out !== '-', signal: interrupted.signal })
    if (args.quiet !== true) {
      const where = args.out === '-' ? 'stdout' : args.out
      process.stderr.write(
        `keel export: ${rows} rows of ${args.tables.join(', ')} for ${args.tenant} to ${where} in ${Date.now() - started} ms\n`,
      )
    }
  } finally {
    process.off('SIGINT', interrupt)
    process.off('SIGTERM', interrupt)
    await keel.close()
  }
}

/** The command-line spelling of an option's key: maxRowsPerSecond is --max-rows-per-second. */
function flag(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}
