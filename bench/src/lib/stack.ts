import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface StackNode {
  host: string
  port: number
  dataDir?: string
  url: string
  ownerUrl: string
  superUrl: string
}

export interface Stack {
  primary: StackNode
}

/** The repository root: this file is bundled into bench/dist/*.js. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../..')

/** Connection info written by `node scripts/stack.mjs up` (override the path with KEEL_STACK_FILE). */
export function readStack(): Stack {
  const file = process.env.KEEL_STACK_FILE ?? join(repoRoot, '.keel/stack.json')
  if (!existsSync(file))
    throw new Error(`${file} not found: start the local stack with \`node scripts/stack.mjs up\``)
  return JSON.parse(readFileSync(file, 'utf8')) as Stack
}

/** The same URL with another host and port (to go through the delay proxy). */
export function withHostPort(url: string, host: string, port: number): string {
  const u = new URL(url)
  u.hostname = host
  u.port = String(port)
  return u.toString()
}
