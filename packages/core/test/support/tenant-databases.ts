import pg from 'pg'
import { connect } from './db.js'
import { readStack } from './stack.js'

/** `url` with its database replaced: the stack's URLs name database `keel`. */
export function urlFor(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/**
 * Creates tenant databases on the stack's primary (the replicas carry them: physical replication),
 * owned by keel_owner, each with `tables` created by the owner and exactly the grants the README's
 * database-mode section tells users to give the runtime role.
 */
export async function createTenantDatabases(
  names: readonly string[],
  tables: readonly string[],
): Promise<void> {
  const su = await connect('super')
  try {
    for (const name of names) {
      await su.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await su.query(`CREATE DATABASE ${name} OWNER keel_owner`)
    }
  } finally {
    await su.end()
  }
  const stack = readStack()
  for (const name of names) {
    const owner = new pg.Client({ connectionString: urlFor(stack.primary.ownerUrl, name) })
    await owner.connect()
    try {
      await owner.query(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC`)
      await owner.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${name} TO keel_app`)
      await owner.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC')
      await owner.query('GRANT USAGE ON SCHEMA public TO keel_app')
      for (const table of tables) {
        await owner.query(
          `CREATE TABLE ${table} (tenant_id text NOT NULL, id bigserial, body text NOT NULL DEFAULT '', n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id))`,
        )
        await owner.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO keel_app`)
        await owner.query(`GRANT USAGE ON SEQUENCE ${table}_id_seq TO keel_app`)
      }
    } finally {
      await owner.end()
    }
  }
}

/** Waits until every replica can connect to each database (replica2 replays 1.5 s late). */
export async function awaitDatabasesOnReplicas(names: readonly string[]): Promise<void> {
  for (const replica of readStack().replicas) {
    const client = new pg.Client({ connectionString: replica.superUrl })
    await client.connect()
    try {
      for (let i = 0; i < 400; i++) {
        const r = await client.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_database WHERE datname = ANY($1)',
          [names],
        )
        if (r.rows[0]?.n === names.length) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    } finally {
      await client.end()
    }
  }
}

export async function dropTenantDatabases(names: readonly string[]): Promise<void> {
  const su = await connect('super')
  try {
    for (const name of names) await su.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  } finally {
    await su.end()
  }
}
