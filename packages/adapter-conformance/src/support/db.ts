import { applyRlsPolicy } from '@keel/core'
import pg from 'pg'
import { readStack } from './stack.js'

/** A client for DDL and checks, connected as the table owner (migrations) or the superuser. */
export async function connect(as: 'owner' | 'super'): Promise<pg.Client> {
  const stack = readStack()
  const client = new pg.Client({
    connectionString: as === 'owner' ? stack.primary.ownerUrl : stack.primary.superUrl,
  })
  await client.connect()
  return client
}

/** Creates a fresh tenant table under RLS, the way keel's docs tell users to. */
export async function createRlsTable(table: string): Promise<void> {
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${table}`)
    await owner.query(
      `CREATE TABLE ${table} (tenant_id text NOT NULL, id bigserial, body text NOT NULL DEFAULT '', n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id))`,
    )
    await applyRlsPolicy(owner, { table })
  } finally {
    await owner.end()
  }
}

/** Waits until every replica has replayed the table's creation (replica2 lags 1.5 s on purpose). */
export async function awaitOnReplicas(table: string): Promise<void> {
  for (const replica of readStack().replicas) {
    const client = new pg.Client({ connectionString: replica.superUrl })
    await client.connect()
    try {
      for (let i = 0; i < 200; i++) {
        const r = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table])
        if (r.rows[0]?.t !== null) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    } finally {
      await client.end()
    }
  }
}

export async function dropTable(table: string): Promise<void> {
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${table}`)
  } finally {
    await owner.end()
  }
}
