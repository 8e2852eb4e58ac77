import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../../..')

export interface PgNode {
  name?: string
  host: string
  port: number
  url: string
  ownerUrl: string
  superUrl: string
}

export interface Stack {
  primary: PgNode
  replicas: PgNode[]
  redis: { host: string; port: number; url: string }
}

export function readStack(): Stack {
  return JSON.parse(readFileSync(join(repoRoot, '.keel/stack.json'), 'utf8')) as Stack
}

const run = promisify(execFile)

/** Stops, kills or starts one process of the stack, for fault injection. */
export async function stackCtl(command: 'stop' | 'start' | 'kill', name: string): Promise<void> {
  await run(process.execPath, [join(repoRoot, 'scripts/stack.mjs'), command, name], { timeout: 120_000 })
}
