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

export interface StackReplica extends StackNode {
  name: string
  /** recovery_min_apply_delay the stack gave this replica (replica2: 1500 by default). */
  applyDelayMs?: number
}

export interface StackRedis {
  host: string
  port: number
  url: string
}

export interface Stack {
  primary: StackNode
  /** Streaming replicas of the primary (replica1, replica2), when the stack has them. */
  replicas?: StackReplica[]
  /** The stack's own Redis (never the system one on 6379), when the stack has it. */
  redis?: StackRedis
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
