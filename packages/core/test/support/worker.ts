import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { readStack, repoRoot } from './stack.js'

const coreDir = join(dirname(fileURLToPath(import.meta.url)), '../..')
// Inside the package, so the build's bare imports (pg, ioredis) resolve from its node_modules.
const distDir = join(dirname(fileURLToPath(import.meta.url)), '../../.test-dist')

/**
 * Worker processes run keel from a fresh ESM build of the sources (built once per test run), so the
 * multi-process tests exercise the code under test, not a stale dist.
 */
export function buildForWorkers(): string {
  mkdirSync(distDir, { recursive: true })
  execFileSync(
    join(repoRoot, 'node_modules/.bin/tsup'),
    [
      'src/index.ts',
      '--no-config',
      '--format',
      'esm',
      '--target',
      'node20',
      '--platform',
      'node',
      // As tsup.config.ts: keel's Lua scripts are bundled as text.
      '--loader',
      '.lua=text',
      '--out-dir',
      distDir,
      '--silent',
    ],
    { cwd: coreDir, stdio: 'pipe', timeout: 120_000 },
  )
  const entry = join(distDir, 'index.js')
  if (!existsSync(entry)) throw new Error('worker build produced no index.js')
  return entry
}

export class Worker {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  readonly ready: Promise<void>
  #next = 0

  constructor(script: string, args: Record<string, unknown>) {
    this.#child = spawn(process.execPath, [script, JSON.stringify(args)], {
      cwd: coreDir,
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    const lines = createInterface({ input: this.#child.stdout! })
    this.ready = new Promise((resolve, reject) => {
      this.#child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
      lines.on('line', (line) => {
        const message = JSON.parse(line) as {
          ready?: boolean
          id?: number
          ok?: boolean
          result?: unknown
          error?: string
        }
        if (message.ready) return resolve()
        const pending = this.#pending.get(message.id!)
        this.#pending.delete(message.id!)
        if (message.ok) pending?.resolve(message.result)
        else pending?.reject(new Error(message.error))
      })
    })
  }

  call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#child.stdin!.write(`${JSON.stringify({ id, op, args })}\n`)
    })
  }

  async close(): Promise<void> {
    this.#child.stdin!.end()
    await new Promise((r) => this.#child.once('exit', r))
  }
}

/**
 * @param redis the cache's Redis in keel's config form (`{ cluster }`, `{ sentinels, name }`); the
 *   stack's single Redis when omitted.
 * @param cache more of keel's cache options for the workers (e.g. `invalidationAckTimeoutMs`).
 */
export async function startWorkers(
  count: number,
  dist: string,
  prefix: string,
  redis?: Record<string, unknown>,
  cache?: Record<string, unknown>,
): Promise<Worker[]> {
  const stack = readStack()
  const script = join(coreDir, 'test/fixtures/cache-worker.mjs')
  const workers = Array.from(
    { length: count },
    () =>
      new Worker(script, {
        dist,
        pgUrl: stack.primary.url,
        redisUrl: stack.redis.url,
        prefix,
        ...(redis === undefined ? {} : { redis }),
        ...(cache === undefined ? {} : { cache }),
      }),
  )
  await Promise.all(workers.map((w) => w.ready))
  return workers
}
