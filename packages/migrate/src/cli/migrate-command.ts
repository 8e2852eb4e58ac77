import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import type { Command } from 'commander'
import { migratorOptionsFrom } from '../config/load-config.js'
import { lintSql } from '../lint/lint-sql.js'
import type { ScopeStatus } from '../migrator/create-migrator.js'
import { FleetProgress } from './fleet-progress.js'
import { commandConfig, commandMigrator, positiveInt } from './shared-options.js'

/** `keel migrate up | status | lint | new`. */
export function registerMigrateCommand(program: Command): void {
  const migrate = program
    .command('migrate')
    .description('lock-safe, resumable migrations: shared/ once, tenant/ per tenant')

  migrate
    .command('up')
    .description('apply pending migrations: shared first, then every tenant (exit 1 if any scope failed)')
    .option('--concurrency <n>', 'tenants migrated at once', positiveInt)
    .option('--canary <n>', 'migrate the first n tenants first; stop if one fails', positiveInt)
    .option('--lock-timeout <ms>', 'lock_timeout of each statement', positiveInt)
    .option('--tenant <id...>', 'only these tenants')
    .option('--lint <mode>', 'off | warn | error')
    .action(
      async (
        opts: {
          concurrency?: number
          canary?: number
          lockTimeout?: number
          tenant?: string[]
          lint?: 'off' | 'warn' | 'error'
        },
        command: Command,
      ) => {
        const progress = new FleetProgress()
        const overrides = {
          ...(opts.concurrency !== undefined && { concurrency: opts.concurrency }),
          ...(opts.canary !== undefined && { canary: opts.canary }),
          ...(opts.lockTimeout !== undefined && { lockTimeoutMs: opts.lockTimeout }),
          ...(opts.lint !== undefined && { lint: opts.lint }),
        }
        const { migrator } = await commandMigrator(command, overrides, progress.handle)
        try {
          const result = await migrator.up(opts.tenant ? { tenants: opts.tenant } : {})
          progress.summary(result)
          if (result.failed.length > 0 || result.skipped.length > 0) process.exitCode = 1
        } finally {
          await migrator.close()
        }
      },
    )

  migrate
    .command('status')
    .description('applied / pending / failed per scope, and drift (applied files changed or gone)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const { migrator } = await commandMigrator(command, {}, () => undefined)
      try {
        const rows = await migrator.status()
        if (opts.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`)
        else process.stdout.write(statusTable(rows))
        if (rows.some((r) => r.state === 'failed' || r.state === 'error' || r.drift.length > 0))
          process.exitCode = 1
      } finally {
        await migrator.close()
      }
    })

  migrate
    .command('lint [files...]')
    .description(
      'report statements that lock or rewrite a busy table (default: every migration); exit 1 on findings',
    )
    .action(async (files: string[], _opts: unknown, command: Command) => {
      const targets = files.length > 0 ? files : await allMigrationFiles(command)
      let count = 0
      for (const file of targets) {
        const findings = await lintSql(await readFile(file, 'utf8'), { file })
        for (const f of findings) {
          count++
          process.stdout.write(
            `${relative(process.cwd(), file)}:${f.line} ${f.rule}\n  ${f.message}\n  fix: ${f.fix}\n`,
          )
        }
      }
      process.stdout.write(`${count} finding(s) in ${targets.length} file(s)\n`)
      if (count > 0) process.exitCode = 1
    })

  migrate
    .command('new <name>')
    .description('create the next numbered migration file')
    .option('--shared', 'in shared/ (runs once)')
    .option('--tenant', 'in tenant/ (runs in every tenant scope)')
    .option('--js', 'a JS migration (.mjs exporting async function up(ctx))')
    .option('--backfill', 'a JS migration filling a column with ctx.backfill (no transaction around it)')
    .action(
      async (
        name: string,
        opts: { shared?: boolean; tenant?: boolean; js?: boolean; backfill?: boolean },
        command: Command,
      ) => {
        const config = await commandConfig(command).catch(() => undefined)
        const options =
          config === undefined ? { dir: 'migrations', tenancy: undefined } : migratorOptionsFrom(config)
        const mode = (options.tenancy as { mode?: string } | undefined)?.mode ?? 'rls'
        const kind = opts.shared ? 'shared' : opts.tenant ? 'tenant' : mode === 'rls' ? 'shared' : 'tenant'
        const folder = join(options.dir, kind)
        await mkdir(folder, { recursive: true })
        const existing = (await readdir(folder))
          .map((f) => /^(\d+)_/.exec(f)?.[1])
          .filter((n) => n !== undefined)
        const next = existing.reduce((max, n) => Math.max(max, Number(n)), 0) + 1
        const slug = name
          .toLowerCase()
          .replace(/[^a-z0-9]+/g, '_')
          .replace(/^_|_$/g, '')
        const js = opts.js === true || opts.backfill === true
        const file = join(folder, `${String(next).padStart(4, '0')}_${slug}.${js ? 'mjs' : 'sql'}`)
        await writeFile(file, js ? jsTemplate(name, opts.backfill === true) : sqlTemplate(name), {
          flag: 'wx',
        })
        process.stdout.write(`${relative(process.cwd(), file)}\n`)
      },
    )
}

function sqlTemplate(name: string): string {
  return `-- ${name}\n-- keel runs this file in one transaction with lock_timeout set (no BEGIN/COMMIT here).\n-- A CREATE INDEX CONCURRENTLY goes in a file of its own; run \`keel migrate lint\` before committing.\n`
}

/** A JS migration (ADR 0047); with `backfill`, one filling a column in keyset batches (ADR 0048). */
function jsTemplate(name: string, backfill: boolean): string {
  if (!backfill) {
    return `// ${name}\n// Runs in one transaction with the ledger row (lock_timeout set), exactly once per scope.\n/** @param {import('@keel/migrate').MigrationContext} ctx */\nexport async function up(ctx) {\n  await ctx.client.query('SELECT 1')\n}\n`
  }
  return `// ${name}\n// A backfill: no transaction around it; each batch is its own, resumable after a kill (docs/migrate.md#backfills).\nexport const transaction = false\n\n/** @param {import('@keel/migrate').MigrationContext} ctx */\nexport async function up(ctx) {\n  await ctx.backfill({\n    table: 'my_table',\n    set: { new_column: 'expression(old_column)' },\n    where: 'new_column IS NULL',\n    batchSize: 1000,\n  })\n}\n`
}

async function allMigrationFiles(command: Command): Promise<string[]> {
  const config = await commandConfig(command)
  const dir = migratorOptionsFrom(config).dir
  const files: string[] = []
  for (const kind of ['shared', 'tenant']) {
    const names = await readdir(join(dir, kind)).catch(() => [] as string[])
    files.push(
      ...names
        .filter((n) => n.endsWith('.sql'))
        .sort()
        .map((n) => join(dir, kind, n)),
    )
  }
  return files
}

function statusTable(rows: readonly ScopeStatus[]): string {
  const header = ['scope', 'state', 'applied', 'pending', 'drift', 'last failure']
  const body = rows.map((r) => [
    r.tenant === null ? '(shared)' : r.tenant,
    r.state,
    String(r.applied),
    r.pending.length === 0
      ? '0'
      : `${r.pending.length} (${r.pending[0]}${r.pending.length > 1 ? ', …' : ''})`,
    [...r.drift.map((d) => `changed ${d}`), ...r.unknown.map((u) => `gone ${u}`)].join(', ') || '-',
    r.failure === null ? '-' : `${r.failure.migration ?? ''} ${r.failure.error}`.trim().slice(0, 80),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)))
  const line = (cells: string[]) =>
    `${cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd()}\n`
  const counts = ['ok', 'pending', 'failed', 'missing', 'error']
    .map((s) => [s, rows.filter((r) => r.state === s).length] as const)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
  return `${line(header)}${body.map(line).join('')}${rows.length} scope(s): ${counts.join(', ')}\n`
}
