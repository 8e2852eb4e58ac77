import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMigrator, isMigrateError, type MigrateEvent } from '../src/index.js'
import { connect, dropFleet, readStack, runCli, sleep, uniquePrefix, until } from './support.js'

// ctx.backfill (ADR 0048) against the real stack: keyset batches each in its own short transaction, bounded
// to the rows present at its start, resumable after SIGKILL, waiting while a replica's replay is paused.
const prefix = uniquePrefix('bf')
const big = `${prefix}_big`
const lagT = `${prefix}_lag`
const killT = `${prefix}_kill`
const fleet = ['a', 'b', 'c', 'd', 'e', 'f'].map((t) => `${prefix}${t}`)
const fleetSchemas = fleet.map((t) => `tenant_${t}`)
const ownerUrl = () => readStack().primary.ownerUrl

/** A fresh migrations folder with these files (name -> text). */
function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'keel-backfill-'))
  mkdirSync(join(dir, 'shared'))
  mkdirSync(join(dir, 'tenant'))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

async function query<T extends pg.QueryResultRow = Record<string, unknown>>(
  sql: string,
  params: unknown[] = [],
) {
  const c = await connect('owner')
  try {
    return (await c.query<T>(sql, params)).rows
  } finally {
    await c.end()
  }
}

const backfillState = async (id: string) =>
  (
    await query<{ rows_done: string; batches: number; done: boolean }>(
      'SELECT rows_done::text, batches, done FROM keel_migrate.backfill WHERE scope = $1 AND id = $2',
      ['shared', id],
    )
  )[0]

async function replicaSuper(name: 'replica1' | 'replica2'): Promise<pg.Client> {
  const r = readStack().replicas.find((x) => x.name === name)!
  const c = new pg.Client({ connectionString: (r as unknown as { superUrl: string }).superUrl })
  c.on('error', () => undefined)
  await c.connect()
  return c
}

beforeAll(async () => {
  const su = await connect('super')
  // Seeing replay_lag in pg_stat_replication needs pg_monitor (docs/migrate.md, what the owner role needs).
  await su.query('GRANT pg_monitor TO keel_owner')
  await su.end()
  const owner = await connect('owner')
  await owner.query(`CREATE TABLE ${big} (id bigserial PRIMARY KEY, v int NOT NULL, w int, batch_tx bigint)`)
  await owner.query(`INSERT INTO ${big} (v) SELECT g FROM generate_series(1, 200000) g`)
  await owner.query(`CREATE TABLE ${lagT} (id bigserial PRIMARY KEY, v int NOT NULL, w int)`)
  await owner.query(`INSERT INTO ${lagT} (v) SELECT g FROM generate_series(1, 30000) g`)
  await owner.query(
    `CREATE TABLE ${killT} (id bigserial PRIMARY KEY, v int NOT NULL, touched int NOT NULL DEFAULT 0)`,
  )
  await owner.query(`INSERT INTO ${killT} (v) SELECT g FROM generate_series(1, 40000) g`)
  await owner.query(`ANALYZE ${big}; ANALYZE ${lagT}; ANALYZE ${killT}`)
  for (const s of fleetSchemas) await owner.query(`CREATE SCHEMA "${s}"`)
  await owner.end()
})

afterAll(async () => {
  for (const name of ['replica1', 'replica2'] as const) {
    const c = await replicaSuper(name).catch(() => undefined)
    await c?.query('SELECT pg_wal_replay_resume()').catch(() => undefined)
    await c?.end()
  }
  await dropFleet(fleetSchemas)
  const owner = await connect('owner')
  for (const t of [big, lagT, killT]) await owner.query(`DROP TABLE IF EXISTS ${t}`)
  for (const table of ['ledger', 'progress', 'backfill', 'failure'])
    await owner.query(`DELETE FROM keel_migrate.${table} WHERE id LIKE $1`, [`%${prefix}%`])
  await owner.end()
  const su = await connect('super')
  await su.query('REVOKE pg_monitor FROM keel_owner')
  await su.end()
})

describe('ctx.backfill', () => {
  it('200k rows under concurrent app writes: one short transaction per batch of at most batchSize rows, the app never waits for the whole table', async () => {
    const id = `0001_${prefix}_big`
    const dir = dirWith({
      [`shared/${id}.mjs`]: `export const transaction = false
        export async function up(ctx) {
          await ctx.backfill({ table: '${big}', set: { w: 'v * 2', batch_tx: 'txid_current()' }, batchSize: 1000, maxReplicaLagMs: 5000 })
        }`,
    })
    // App clients update random rows in a loop for the whole backfill.
    let running = true
    let writesDuringBackfill = 0
    let backfilling = false
    const app = Array.from({ length: 4 }, async () => {
      const c = await connect('owner')
      try {
        while (running) {
          await c.query(`UPDATE ${big} SET v = v WHERE id = $1`, [1 + Math.floor(Math.random() * 200000)])
          if (backfilling) writesDuringBackfill++
        }
      } finally {
        await c.end()
      }
    })
    const events: MigrateEvent[] = []
    const m = createMigrator({ connection: ownerUrl(), dir, onEvent: (e) => events.push(e) })
    backfilling = true
    const r = await m.up()
    backfilling = false
    running = false
    await Promise.all(app)
    await m.close()
    expect(r.failed).toEqual([])

    const rows = await query<{ n: number; missing: number; per_tx_max: number; txs: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE w IS DISTINCT FROM v * 2)::int AS missing,
        (SELECT max(c)::int FROM (SELECT count(*) AS c FROM ${big} GROUP BY batch_tx) x) AS per_tx_max,
        count(DISTINCT batch_tx)::int AS txs FROM ${big}`,
    )
    expect(rows[0]).toMatchObject({ n: 200000, missing: 0 })
    // Each batch was its own transaction and locked at most batchSize rows.
    expect(rows[0]!.per_tx_max).toBeLessThanOrEqual(1000)
    expect(rows[0]!.txs).toBeGreaterThanOrEqual(200)
    // The app kept writing while the backfill ran (a lower bound on work done, not a latency bound).
    expect(writesDuringBackfill).toBeGreaterThan(0)
    const progress = events.filter((e) => e.type === 'backfill-progress')
    expect(progress.length).toBeGreaterThanOrEqual(200)
    const last = progress.at(-1)!
    expect(last).toMatchObject({ rowsDone: 200000, totalEstimate: 200000, batches: 200 })
  })

  it('a single big UPDATE, for contrast, makes an app write to any row wait until it commits', async () => {
    const big1 = await connect('owner')
    const appClient = await connect('owner')
    try {
      await big1.query('BEGIN')
      await big1.query(`UPDATE ${big} SET w = v * 3`)
      const pid = (await appClient.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid
      let finished = false
      const write = appClient.query(`UPDATE ${big} SET v = v WHERE id = 123456`).then(() => {
        finished = true
      })
      await until(async () => {
        const w = await query<{ w: string | null }>(
          'SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1',
          [pid],
        )
        return w[0]?.w === 'Lock'
      })
      await sleep(300)
      expect(finished).toBe(false)
      await big1.query('COMMIT')
      await write
      expect(finished).toBe(true)
    } finally {
      await big1.query('ROLLBACK').catch(() => undefined)
      await big1.end()
      await appClient.end()
    }
  })

  it('waits while a replica has replay paused (reports why, makes no progress), then finishes when replay resumes', async () => {
    const id = `0002_${prefix}_lag`
    const dir = dirWith({
      [`shared/${id}.mjs`]: `export const transaction = false
        export async function up(ctx) {
          await ctx.backfill({ table: '${lagT}', set: { w: 'v + 1' }, batchSize: 500, pauseMs: 150, maxReplicaLagMs: 4000 })
        }`,
    })
    const events: MigrateEvent[] = []
    const m = createMigrator({ connection: ownerUrl(), dir, onEvent: (e) => events.push(e) })
    const replica1 = await replicaSuper('replica1')
    let resumed = false
    try {
      const run = m.up()
      await until(async () => Number((await backfillState(id))?.rows_done ?? 0) > 0)
      await replica1.query('SELECT pg_wal_replay_pause()')
      await until(async () => events.some((e) => e.type === 'backfill-waiting'))
      const waiting = events.find((e) => e.type === 'backfill-waiting')!
      expect(waiting).toMatchObject({ replica: 'replica1', maxReplicaLagMs: 4000 })
      expect((waiting as { lagMs: number }).lagMs).toBeGreaterThan(4000)
      const before = await backfillState(id)
      await sleep(2000)
      const during = await backfillState(id)
      expect(during).toEqual(before)
      expect(during!.done).toBe(false)
      await replica1.query('SELECT pg_wal_replay_resume()')
      resumed = true
      const r = await run
      expect(r.failed).toEqual([])
      const left = await query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${lagT} WHERE w IS DISTINCT FROM v + 1`,
      )
      expect(left[0]!.n).toBe(0)
      expect(events.some((e) => e.type === 'log' && /backfill resumed/.test(e.message))).toBe(true)
    } finally {
      if (!resumed) await replica1.query('SELECT pg_wal_replay_resume()').catch(() => undefined)
      await replica1.end()
      await m.close()
    }
  })

  it('SIGKILL mid-backfill, rerun: every row updated exactly once, rows inserted after the start untouched', async () => {
    const id = `0003_${prefix}_kill`
    const dir = dirWith({
      [`shared/${id}.mjs`]: `export const transaction = false
        export async function up(ctx) {
          await ctx.backfill({ table: '${killT}', set: { touched: 'touched + 1' }, batchSize: 500, pauseMs: 40, maxReplicaLagMs: 5000 })
        }`,
    })
    const env = { KEEL_MIGRATE_URL: ownerUrl(), KEEL_MIGRATIONS_DIR: dir }
    let killedBefore = 0
    const first = await runCli(['migrate', 'up'], {
      cwd: dir,
      env,
      onStart: (child) => {
        void (async () => {
          await until(async () => Number((await backfillState(id))?.rows_done ?? 0) >= 8000)
          // Inserted after the backfill started: above its max key, the app's new writes set the column themselves.
          await query(`INSERT INTO ${killT} (v, touched) SELECT g, 0 FROM generate_series(1, 100) g`)
          await until(async () => Number((await backfillState(id))?.rows_done ?? 0) >= 12000)
          child.kill('SIGKILL')
        })()
      },
    })
    expect(first.signal).toBe('SIGKILL')
    const state = await backfillState(id)
    killedBefore = Number(state!.rows_done)
    expect(state!.done).toBe(false)
    expect(killedBefore).toBeLessThan(40000)
    // Exactly the rows the committed batches recorded were touched, once each.
    const mid = await query<{ once: number; more: number }>(
      `SELECT count(*) FILTER (WHERE touched = 1)::int AS once, count(*) FILTER (WHERE touched > 1)::int AS more FROM ${killT}`,
    )
    expect(mid[0]).toEqual({ once: killedBefore, more: 0 })

    const second = await runCli(['migrate', 'up'], { cwd: dir, env })
    expect(second.code, second.stdout + second.stderr).toBe(0)
    expect(second.stdout).toMatch(/backfill .* rows/)
    const after = await query<{ once: number; other: number; late_touched: number }>(
      `SELECT count(*) FILTER (WHERE touched = 1 AND id <= 40000)::int AS once,
        count(*) FILTER (WHERE touched <> 1 AND id <= 40000)::int AS other,
        count(*) FILTER (WHERE id > 40000 AND touched <> 0)::int AS late_touched FROM ${killT}`,
    )
    expect(after[0]).toEqual({ once: 40000, other: 0, late_touched: 0 })
    expect(
      await query('SELECT 1 FROM keel_migrate.ledger WHERE scope = $1 AND id = $2', ['shared', id]),
    ).toHaveLength(1)
    // The state row goes with the ledger row.
    expect(await backfillState(id)).toBeUndefined()
  })

  it('fleet: a tenant/ backfill migration runs in every tenant schema', async () => {
    const dir = dirWith({
      [`tenant/0001_${prefix}_items.sql`]: `CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, w int);
        INSERT INTO items SELECT g, g FROM generate_series(1, 3000) g;`,
      [`tenant/0002_${prefix}_fill.mjs`]: `export const transaction = false
        export async function up(ctx) {
          const r = await ctx.backfill({ table: 'items', set: { w: 'v * 10' }, where: 'w IS NULL', batchSize: 700, maxReplicaLagMs: 5000 })
          ctx.log(ctx.schema + ' ' + r.rowsUpdated)
        }`,
    })
    const events: MigrateEvent[] = []
    const m = createMigrator({
      connection: ownerUrl(),
      dir,
      tenancy: { mode: 'schema' },
      tenants: fleet,
      concurrency: 3,
      onEvent: (e) => events.push(e),
    })
    const r = await m.up()
    await m.close()
    expect(r.failed).toEqual([])
    expect(r.applied).toHaveLength(fleet.length * 2)
    for (const s of fleetSchemas) {
      const rows = await query<{ n: number }>(`SELECT count(*)::int AS n FROM "${s}".items WHERE w = v * 10`)
      expect(rows[0]!.n).toBe(3000)
      expect(events.some((e) => e.type === 'log' && e.message === `${s} 3000`)).toBe(true)
    }
    const tenantsWithProgress = new Set(
      events.filter((e) => e.type === 'backfill-progress').map((e) => (e as { tenant: string }).tenant),
    )
    expect([...tenantsWithProgress].sort()).toEqual([...fleet].sort())
  })

  it('walks any orderable key: a uuid primary key (no max(uuid) in Postgres 15), with update() instead of set', async () => {
    const uuidT = `${prefix}_uuid`
    await query(
      `CREATE TABLE ${uuidT} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), v int NOT NULL, w int)`,
    )
    await query(`INSERT INTO ${uuidT} (v) SELECT g FROM generate_series(1, 2500) g`)
    try {
      const id = `0005_${prefix}_uuid`
      const dir = dirWith({
        [`shared/${id}.mjs`]: `export const transaction = false
          export async function up(ctx) {
            const r = await ctx.backfill({ table: '${uuidT}', batchSize: 400, maxReplicaLagMs: 5000,
              update: async (c, { from, to }) => (await c.query(
                from === null ? 'UPDATE ${uuidT} SET w = v + 7 WHERE id <= $1::uuid' : 'UPDATE ${uuidT} SET w = v + 7 WHERE id > $1::uuid AND id <= $2::uuid',
                from === null ? [to] : [from, to])).rowCount })
            ctx.log('uuid ' + r.rowsUpdated + ' ' + r.batches)
          }`,
      })
      const events: MigrateEvent[] = []
      const m = createMigrator({ connection: ownerUrl(), dir, onEvent: (e) => events.push(e) })
      const r = await m.up()
      await m.close()
      expect(r.failed).toEqual([])
      expect(events.some((e) => e.type === 'log' && e.message === 'uuid 2500 7')).toBe(true)
      const left = await query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${uuidT} WHERE w IS DISTINCT FROM v + 7`,
      )
      expect(left[0]!.n).toBe(0)
    } finally {
      await query(`DROP TABLE IF EXISTS ${uuidT}`)
    }
  })

  it('refuses to run blind: a role that cannot see replay lag fails the backfill unless maxReplicaLagMs is 0', async () => {
    const su = await connect('super')
    await su.query('REVOKE pg_monitor FROM keel_owner')
    await su.end()
    try {
      const id = `0004_${prefix}_blind`
      const dir = dirWith({
        [`shared/${id}.mjs`]: `export const transaction = false
          export async function up(ctx) { await ctx.backfill({ table: '${lagT}', set: { w: 'v' } }) }`,
      })
      const m = createMigrator({ connection: ownerUrl(), dir })
      const r = await m.up()
      await m.close()
      expect(r.failed).toHaveLength(1)
      expect(isMigrateError(r.failed[0]!.error.cause ?? r.failed[0]!.error)).toBe(true)
      expect(r.failed[0]!.error.message).toMatch(/cannot read pg_stat_replication/)
    } finally {
      const su2 = await connect('super')
      await su2.query('GRANT pg_monitor TO keel_owner')
      await su2.end()
    }
  })
})
