import { applyRlsPolicy, createKeel, isKeelError, KeelError } from '@keel/core'
import pg from 'pg'
import { demoUrls } from './stack-urls.js'

const { appUrl, ownerUrl, replicas, redisUrl } = demoUrls()
const bold = (s: string) => `\x1b[1m${s}\x1b[0m`
const dim = (s: string) => `\x1b[2m${s}\x1b[0m`
const step = (title: string) => console.log(`\n${bold(`▸ ${title}`)}`)

async function migrate(): Promise<void> {
  // Migrations run as the owner role; the app never does.
  const owner = new pg.Client({ connectionString: ownerUrl })
  await owner.connect()
  try {
    await owner.query('DROP TABLE IF EXISTS demo_invoices')
    await owner.query(`
      CREATE TABLE demo_invoices (
        tenant_id    text   NOT NULL,
        id           bigserial,
        number       text   NOT NULL,
        amount_cents bigint NOT NULL,
        PRIMARY KEY (tenant_id, id),
        UNIQUE (tenant_id, number)
      )`)
    await applyRlsPolicy(owner, { table: 'demo_invoices' })
  } finally {
    await owner.end()
  }
}

async function main(): Promise<void> {
  step('Migrate: demo_invoices under row-level security (ENABLE + FORCE, USING + WITH CHECK)')
  await migrate()
  console.log(dim('  as the owner role; keel itself connects as keel_app (not owner, no BYPASSRLS)'))

  const keel = createKeel({
    postgres: { primary: { connectionString: appUrl }, pool: { max: 6 } },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
    limits: { tenantConnections: 0.5, acquireTimeoutMs: 400, statementTimeoutMs: 5_000 },
  })

  try {
    step('Create three tenants and their invoices, each through its own scoped client')
    const sizes = { acme: 5, globex: 3, initech: 1 } as const
    for (const [tenant, count] of Object.entries(sizes)) {
      const db = keel.tenant(tenant)
      for (let i = 1; i <= count; i++) {
        await db.query('INSERT INTO demo_invoices (tenant_id, number, amount_cents) VALUES ($1, $2, $3)', [
          tenant,
          `${tenant.toUpperCase()}-${i}`,
          i * 1_250,
        ])
      }
      console.log(`  ${tenant.padEnd(8)} ${count} invoice(s)`)
    }

    step('The same query, no WHERE tenant clause, per tenant: each sees only its own rows')
    for (const tenant of Object.keys(sizes)) {
      const r = await keel
        .tenant(tenant)
        .query<{ n: string; total: string }>(
          'SELECT count(*) AS n, sum(amount_cents) AS total FROM demo_invoices',
        )
      console.log(`  ${tenant.padEnd(8)} count=${r.rows[0]?.n}  total=${r.rows[0]?.total} cents`)
    }

    step("acme tries to write a row for globex: refused by the policy's WITH CHECK")
    try {
      await keel
        .tenant('acme')
        .query("INSERT INTO demo_invoices (tenant_id, number, amount_cents) VALUES ('globex', 'X-1', 1)")
    } catch (error) {
      console.log(`  refused: ${(error as Error).message} (SQLSTATE ${(error as { code?: string }).code})`)
    }

    step('The runtime role without a tenant: fails closed, zero rows')
    const raw = new pg.Client({ connectionString: appUrl })
    await raw.connect()
    const none = await raw.query('SELECT count(*) AS n FROM demo_invoices')
    await raw.end()
    console.log(`  count=${none.rows[0]?.n}`)

    step('Hostile tenant ids never reach Postgres')
    for (const id of ["acme'; DROP TABLE demo_invoices; --", '', 'a'.repeat(64), 'acme\nadmin']) {
      try {
        keel.tenant(id)
      } catch (error) {
        if (error instanceof KeelError)
          console.log(`  ${JSON.stringify(id).slice(0, 40).padEnd(42)} -> ${error.code}`)
      }
    }

    step(
      'A transaction: BEGIN, the tenant scope and the first statement in one round trip; rolled back on throw',
    )
    await keel
      .tenant('initech')
      .transaction(async (tx) => {
        await tx.query(
          "INSERT INTO demo_invoices (tenant_id, number, amount_cents) VALUES ('initech', 'TPS-1', 99)",
        )
        throw new Error('the TPS report was missing its cover sheet')
      })
      .catch((error: Error) => console.log(`  rolled back: ${error.message}`))
    const after = await keel.tenant('initech').query<{ n: string }>('SELECT count(*) AS n FROM demo_invoices')
    console.log(`  initech still has ${after.rows[0]?.n} invoice(s)`)

    step('Noisy neighbour: acme floods 8 slow reports; globex stays fast (acme may hold 3 of 6 connections)')
    const flood = Array.from({ length: 8 }, () =>
      keel
        .tenant('acme')
        .query('SELECT pg_sleep(0.3)')
        .then(() => 'done')
        .catch((error: unknown) => (isKeelError(error) ? error.code : 'error')),
    )
    await new Promise((r) => setTimeout(r, 50))
    const started = performance.now()
    await keel.tenant('globex').query('SELECT count(*) FROM demo_invoices')
    console.log(`  globex point query during the flood: ${(performance.now() - started).toFixed(1)} ms`)
    const outcomes = await Promise.all(flood)
    const tally: Record<string, number> = {}
    for (const outcome of outcomes) tally[outcome] = (tally[outcome] ?? 0) + 1
    console.log(`  acme's reports: ${JSON.stringify(tally)}  (the rest waited in acme's own line, bounded)`)
  } finally {
    await keel.close()
  }

  if (replicas.length > 0) await replicaTour()
  if (redisUrl !== undefined) await cacheTour(redisUrl)
  console.log(`\n${bold('Done.')} Tests: npm test   Benchmarks: npm run bench`)
}

async function replicaTour(): Promise<void> {
  const lagged = replicas.at(-1)!
  // Reads only from the replica that replays 1.5 s late: the hardest case for read-your-writes.
  const keel = createKeel({
    postgres: { primary: { connectionString: appUrl }, replicas: [lagged], maxReplicaLagMs: 10_000 },
  })
  const where = (r: { rows: Array<{ replica: boolean }> }) =>
    r.rows[0]?.replica ? 'a replica' : 'the primary'
  try {
    await waitForRotation(keel)
    // The migration above (DROP/CREATE demo_invoices) reaches this replica 1.5 s late.
    await new Promise((r) => setTimeout(r, 1_600))
    step(`Reads go to replicas (here only ${lagged.name}, which replays WAL 1.5 s late)`)
    const read = await keel
      .tenant('acme')
      .query<{ replica: boolean }>('SELECT pg_is_in_recovery() AS replica')
    console.log(`  SELECT served by ${where(read)}`)

    step('Read-your-writes: a write, then reads in the same session and in the next request')
    const db = keel.tenant('acme')
    await db.query(
      "INSERT INTO demo_invoices (tenant_id, number, amount_cents) VALUES ('acme', 'ACME-NEW', 4200)",
    )
    const mine = await db.query<{ replica: boolean; n: string }>(
      "SELECT pg_is_in_recovery() AS replica, count(*) AS n FROM demo_invoices WHERE number = 'ACME-NEW'",
    )
    console.log(
      `  same session, right away: found ${mine.rows[0]?.n}, served by ${where(mine)} (the replica has not replayed it)`,
    )
    const token = db.consistencyToken
    console.log(`  consistency token for the next request: ${token}`)
    const stranger = await keel
      .tenant('acme')
      .query<{ replica: boolean; n: string }>(
        "SELECT pg_is_in_recovery() AS replica, count(*) AS n FROM demo_invoices WHERE number = 'ACME-NEW'",
      )
    console.log(
      `  a request WITHOUT the token: found ${stranger.rows[0]?.n}, served by ${where(stranger)} (stale)`,
    )
    const next = keel.tenant('acme', { consistencyToken: token })
    const carried = await next.query<{ replica: boolean; n: string }>(
      "SELECT pg_is_in_recovery() AS replica, count(*) AS n FROM demo_invoices WHERE number = 'ACME-NEW'",
    )
    console.log(`  the next request WITH the token: found ${carried.rows[0]?.n}, served by ${where(carried)}`)
    await new Promise((r) => setTimeout(r, 1_700))
    const later = await next.query<{ replica: boolean; n: string }>(
      "SELECT pg_is_in_recovery() AS replica, count(*) AS n FROM demo_invoices WHERE number = 'ACME-NEW'",
    )
    console.log(
      `  1.7 s later, with the token: found ${later.rows[0]?.n}, served by ${where(later)} (it has replayed it now)`,
    )

    step('Health')
    const health = await keel.health()
    console.log(`  primary ${health.primary.status} at ${health.primary.address}:${health.primary.port}`)
    for (const r of health.replicas) {
      console.log(
        `  ${r.name} ${r.status}, ${r.inRotation ? 'in rotation' : 'out of rotation'}, lag ${r.lagMs} ms`,
      )
    }
  } finally {
    await keel.close()
  }
}

async function cacheTour(url: string): Promise<void> {
  // Two keel instances stand for two app servers sharing one Redis.
  const config = {
    postgres: { primary: { connectionString: appUrl } },
    cache: { redis: { url }, prefix: `demo${Date.now()}` },
  }
  const serverA = createKeel(config)
  const serverB = createKeel(config)
  let loads = 0
  const summary = (keel: ReturnType<typeof createKeel>) => {
    const db = keel.tenant('acme')
    return db.cached({ key: 'dashboard', tags: ['invoices'], ttlMs: 30_000 }, async () => {
      loads++
      await new Promise((r) => setTimeout(r, 100)) // a slow aggregate
      const r = await db.query<{ n: string; total: string }>(
        'SELECT count(*) AS n, sum(amount_cents) AS total FROM demo_invoices',
      )
      return { ...r.rows[0], computedAt: new Date() }
    })
  }
  try {
    step('Cache: a stampede of 200 concurrent requests on two servers, cold key -> one load')
    const started = performance.now()
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => summary(i % 2 === 0 ? serverA : serverB)),
    )
    console.log(
      `  200 requests answered in ${(performance.now() - started).toFixed(0)} ms, loader ran ${loads} time(s)`,
    )
    console.log(
      `  value: ${JSON.stringify(results[0])} (computedAt is a Date: ${results[0]?.computedAt instanceof Date})`,
    )

    step('Cache: hits from the in-process tier')
    const t0 = performance.now()
    for (let i = 0; i < 10_000; i++) await summary(serverA)
    console.log(
      `  10,000 hits in ${(performance.now() - t0).toFixed(1)} ms; loader still ran ${loads} time(s)`,
    )

    step('Cache: a write invalidates the tag on every server; the next read reloads once')
    await serverA
      .tenant('acme')
      .query(
        "INSERT INTO demo_invoices (tenant_id, number, amount_cents) VALUES ('acme', 'ACME-CACHE', 1000)",
      )
    await serverA.tenant('acme').invalidate({ tags: ['invoices'] })
    const fresh = await summary(serverB)
    console.log(`  server B now sees count=${fresh.n}; loader ran ${loads} time(s)`)
  } finally {
    await Promise.all([serverA.close(), serverB.close()])
  }
}

async function waitForRotation(keel: ReturnType<typeof createKeel>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await keel.health()).replicas.every((r) => r.inRotation)) return
    await new Promise((r) => setTimeout(r, 50))
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
