import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DemoUrls {
  /** The runtime role: not the owner, no BYPASSRLS. */
  appUrl: string
  /** The owner role, for migrations. */
  ownerUrl: string
}

/** Configured URLs win; otherwise the local stack's (scripts/stack.mjs up writes .keel/stack.json). */
export function demoUrls(): DemoUrls {
  const app = process.env.KEEL_PG_PRIMARY_URL
  const owner = process.env.KEEL_PG_PRIMARY_OWNER_URL
  if (app !== undefined && owner !== undefined) return { appUrl: app, ownerUrl: owner }
  const file = join(dirname(fileURLToPath(import.meta.url)), '../../.keel/stack.json')
  const stack = JSON.parse(readFileSync(file, 'utf8')) as { primary: { url: string; ownerUrl: string } }
  return { appUrl: stack.primary.url, ownerUrl: stack.primary.ownerUrl }
}
