import pg from 'pg'
import { applyRlsPolicy } from '../../src/index.js'
import { readStack } from './stack.js'

/** A client for DDL and checks, connected as the table owner (migrations) or the superuser. */
export async function connect(as: 'owner' | 'super' | 'app'): Promise<pg.Client> {
  const stack = readStack()
  const url =
    as === 'owner' ? stack.primary.ownerUrl : as === 'super' ? stack.primary.superUrl : stack.primary.url
  const client = new pg.Client({ connectionString: url })
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

export async function dropTable(table: string): Promise<void> {
  const owner = await connect('owner')
  try {
    await owner.query(`DROP TABLE IF EXISTS ${table}`)
  } finally {
    await owner.end()
  }
}
