import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { type KeelStack, REPO_ROOT, stackFile } from '../../../scripts/stack/client.mjs'

export const repoRoot = REPO_ROOT
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
export const cliPath = join(packageRoot, 'dist/cli.js')

export function readStack(): KeelStack {
  return JSON.parse(readFileSync(stackFile(), 'utf8')) as KeelStack
}

export async function connect(as: 'owner' | 'super' | 'app', database?: string): Promise<pg.Client> {
  const p = readStack().primary
  const url = new URL(as === 'owner' ? p.ownerUrl : as === 'super' ? p.superUrl : p.url)
  if (database !== undefined) url.pathname = `/${database}`
  const client = new pg.Client({ connectionString: url.toString() })
  client.on('error', () => undefined)
  await client.connect()
  return client
}

/** A fresh migrations folder: { 'shared/0001_x.sql': sql, 'tenant/0001_y.sql': sql }. */
export function migrationsDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'keel-migrate-'))
  mkdirSync(join(dir, 'shared'))
  mkdirSync(join(dir, 'tenant'))
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql)
  return dir
}

export function writeMigration(dir: string, name: string, sql: string): void {
  writeFileSync(join(dir, name), sql)
}

/** A prefix unique to this test run, so schemas of earlier runs never collide. */
export function uniquePrefix(label: string): string {
  return `${label}${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`
}

/** Drops the schemas of a test fleet and its ledger rows. */
export async function dropFleet(schemas: readonly string[]): Promise<void> {
  const owner = await connect('owner')
  try {
    for (const s of schemas) await owner.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`)
    await owner
      .query('DELETE FROM keel_migrate.ledger WHERE scope = ANY($1::text[])', [
        schemas.map((s) => `schema:${s}`),
      ])
      .catch(() => undefined)
  } finally {
    await owner.end()
  }
}

export interface CliRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs the built `keel` bin in `cwd`; `onStart` gets the child (to kill it). */
export function runCli(
  args: readonly string[],
  options: {
    cwd: string
    env?: NodeJS.ProcessEnv
    onStart?: (child: import('node:child_process').ChildProcess) => void
  },
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
    options.onStart?.(child)
  })
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `check` until it returns true (no deadline of its own: vitest's test timeout bounds it). */
export async function until(check: () => Promise<boolean>, everyMs = 50): Promise<void> {
  while (!(await check())) await sleep(everyMs)
}
