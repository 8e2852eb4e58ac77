import { applyRlsPolicy } from '@keel/core'
import pg from 'pg'
import { readStack } from './stack.js'

/** The tenants every ORM file seeds; each has its own invoices and payments. */
export const TENANTS = ['acme', 'globex', 'initech', 'umbrella'] as const

/**
 * Two tables under RLS whose join has duplicate column names (tenant_id, id, amount, created_at) and the
 * types an ORM's parsers get wrong under a non-UTC TZ or through object rows: date, timestamp,
 * timestamptz, numeric and bigint. Every ORM's test file maps these same tables (Prisma: prisma/schema.prisma).
 */
const DDL = [
  'DROP TABLE IF EXISTS orm_payments',
  'DROP TABLE IF EXISTS orm_invoices',
  `CREATE TABLE orm_invoices (
     tenant_id text NOT NULL,
     id bigserial,
     number text NOT NULL,
     amount numeric(12, 2) NOT NULL,
     issued_on date NOT NULL,
     due_at timestamp(6) NOT NULL,
     created_at timestamptz(6) NOT NULL DEFAULT now(),
     big bigint NOT NULL DEFAULT 0,
     PRIMARY KEY (tenant_id, id),
     -- One sequence for every tenant: an id names one invoice globally, as a uuid or bigserial key does in
     -- most apps, so an ORM can look an invoice up by id alone (Prisma's findUnique({ where: { id } })).
     UNIQUE (id))`,
  `CREATE TABLE orm_payments (
     tenant_id text NOT NULL,
     id bigserial,
     invoice_id bigint NOT NULL,
     amount numeric(12, 2) NOT NULL,
     paid_on date NOT NULL,
     created_at timestamptz(6) NOT NULL DEFAULT now(),
     PRIMARY KEY (tenant_id, id),
     FOREIGN KEY (tenant_id, invoice_id) REFERENCES orm_invoices (tenant_id, id))`,
]

/** A client as the table owner (migrations) or the superuser (checks across tenants). */
export async function connect(as: 'owner' | 'super'): Promise<pg.Client> {
  const stack = readStack()
  const client = new pg.Client({
    connectionString: as === 'owner' ? stack.primary.ownerUrl : stack.primary.superUrl,
  })
  await client.connect()
  return client
}

/**
 * Creates both tables as the owner, under keel's documented policy (the runtime role gets the
 * stack's default grants only: SELECT/INSERT/UPDATE/DELETE, sequences USAGE/SELECT), seeds every
 * tenant, and waits for the replicas to replay it all (replica2 lags 1.5 s on purpose).
 */
export async function createOrmTables(): Promise<void> {
  const owner = await connect('owner')
  try {
    for (const sql of DDL) await owner.query(sql)
    await applyRlsPolicy(owner, { table: 'orm_invoices' })
    await applyRlsPolicy(owner, { table: 'orm_payments' })
    for (const [t, tenant] of TENANTS.entries()) await seedTenant(owner, tenant, t)
  } finally {
    await owner.end()
  }
  await awaitOnReplicas()
}

/**
 * Values chosen to break a wrong parser: a timestamp 30 minutes before midnight (a TZ shift moves its
 * day), a bigint above 2^53, numerics with cents, an invoice amount unlike its payments' amounts.
 */
async function seedTenant(owner: pg.Client, tenant: string, t: number): Promise<void> {
  // The table is FORCE ROW LEVEL SECURITY: the owner writes as the tenant too.
  await owner.query('BEGIN')
  await owner.query("SELECT set_config('app.tenant_id', $1, true)", [tenant])
  for (let i = 1; i <= 3; i++) {
    const { rows } = await owner.query<{ id: string }>(
      `INSERT INTO orm_invoices (tenant_id, number, amount, issued_on, due_at, created_at, big)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
      [
        tenant,
        `${tenant}-${i}`,
        `${1000 * (t + 1) + i}.${10 + i}`,
        `2024-03-0${i}`,
        `2024-03-0${i} 23:30:00.123456`,
        `2024-03-0${i} 23:30:00.654321+00`,
        `${9007199254740993n + BigInt(t * 10 + i)}`,
      ],
    )
    for (let p = 1; p <= 2; p++) {
      await owner.query(
        `INSERT INTO orm_payments (tenant_id, invoice_id, amount, paid_on, created_at)
         VALUES ($1, $2, $3, $4, $5)`,
        [tenant, rows[0]!.id, `${p * 10 + i}.0${p}`, `2024-04-0${p}`, `2024-04-0${p} 00:15:00+09`],
      )
    }
  }
  await owner.query('COMMIT')
}

/** Waits until every replica has replayed the primary's WAL up to now: the tables and the seed. */
async function awaitOnReplicas(): Promise<void> {
  const admin = await connect('super')
  let lsn: string
  try {
    lsn = (await admin.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn
  } finally {
    await admin.end()
  }
  for (const replica of readStack().replicas) {
    const client = new pg.Client({ connectionString: replica.superUrl })
    await client.connect()
    try {
      for (let i = 0; ; i++) {
        const r = await client.query<{ caught: boolean }>(
          'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught',
          [lsn],
        )
        if (r.rows[0]?.caught === true) break
        if (i > 600) throw new Error(`${replica.name} did not replay the ORM tables`)
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
    } finally {
      await client.end()
    }
  }
}

/**
 * A plain pg.Pool as the owner with the tenant fixed on each connection (`-c app.tenant_id`): the
 * reference an ORM's results on keel must equal, from the same rows through the same ORM.
 */
export function rawOwnerPool(tenant: string): pg.Pool {
  return new pg.Pool({
    connectionString: readStack().primary.ownerUrl,
    options: `-c app.tenant_id=${tenant}`,
    max: 2,
  })
}

/** Every row of the table across tenants, as the superuser (RLS does not apply to it). */
export async function allRows(
  table: 'orm_invoices' | 'orm_payments',
): Promise<Array<Record<string, unknown>>> {
  const admin = await connect('super')
  try {
    return (await admin.query(`SELECT * FROM ${table} ORDER BY tenant_id, id`)).rows
  } finally {
    await admin.end()
  }
}
