import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface DemoUrls {
  /** The runtime role: not the owner, no BYPASSRLS. */
  appUrl: string
  /** The owner role, for migrations. */
  ownerUrl: string
  /** Streaming replicas (the local stack's second one replays 1.5 s late). */
  replicas: Array<{ name: string; connectionString: string }>
  /** Redis for the cache's shared tier and the job queue, when there is one. */
  redisUrl: string | undefined
  /** A role that bypasses RLS: only the load bench's raw-pg baseline uses it. */
  superUrl?: string | undefined
}

/** Configured URLs win; otherwise the local stack's (scripts/stack.mjs up writes .keel/stack.json). */
export function demoUrls(): DemoUrls {
  const app = process.env.KEEL_PG_PRIMARY_URL
  const owner = process.env.KEEL_PG_PRIMARY_OWNER_URL
  if (app !== undefined && owner !== undefined) {
    const replicas = [process.env.KEEL_PG_REPLICA1_URL, process.env.KEEL_PG_REPLICA2_URL]
      .filter((url): url is string => url !== undefined && url !== '')
      .map((connectionString, i) => ({ name: `replica${i + 1}`, connectionString }))
    return {
      appUrl: app,
      ownerUrl: owner,
      replicas,
      redisUrl: process.env.KEEL_REDIS_URL,
      superUrl: process.env.KEEL_PG_PRIMARY_SUPER_URL,
    }
  }
  const file = join(dirname(fileURLToPath(import.meta.url)), '../../.keel/stack.json')
  const stack = JSON.parse(readFileSync(file, 'utf8')) as {
    primary: { url: string; ownerUrl: string; superUrl: string }
    replicas: Array<{ name: string; url: string }>
    redis: { url: string }
  }
  return {
    appUrl: stack.primary.url,
    ownerUrl: stack.primary.ownerUrl,
    replicas: stack.replicas.map((r) => ({ name: r.name, connectionString: r.url })),
    redisUrl: stack.redis.url,
    superUrl: stack.primary.superUrl,
  }
}
