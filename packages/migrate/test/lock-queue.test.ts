import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createMigrator, type MigrateEvent } from '../src/index.js'
import { connect, migrationsDir, readStack, sleep, uniquePrefix, until } from './support.js'

// The eleven-minute lock: a long transaction holds ACCESS SHARE on a busy table; a DDL asking for ACCESS
// EXCLUSIVE queues behind it, and every later query of the app queues behind the DDL. keel's lock_timeout
// makes the DDL give up its place in the queue after lockTimeoutMs and retry later.
const table = `${uniquePrefix('lq')}_busy`

interface AppQuery {
  start: number
  end: number
}

/** App clients reading the busy table in a loop, as keel_app. */
function appTraffic(stopAt: () => boolean): Promise<AppQuery[]> {
  const out: AppQuery[] = []
  const worker = async () => {
    const app = await connect('app')
    try {
      while (!stopAt()) {
        const start = performance.now()
        await app.query(`SELECT count(*) FROM ${table}`)
        out.push({ start, end: performance.now() })
        await sleep(10)
      }
    } finally {
      await app.end()
    }
  }
  return Promise.all([worker(), worker(), worker()]).then(() => out)
}

const worst = (qs: AppQuery[]) => Math.round(Math.max(...qs.map((q) => q.end - q.start)))

beforeAll(async () => {
  const owner = await connect('owner')
  await owner.query(`CREATE TABLE ${table} (id int)`)
  await owner.query(`INSERT INTO ${table} SELECT generate_series(1, 1000)`)
  await owner.end()
})

afterAll(async () => {
  const owner = await connect('owner')
  await owner.query(`DROP TABLE IF EXISTS ${table}`)
  await owner.query("DELETE FROM keel_migrate.ledger WHERE scope = 'shared' AND id LIKE $1", [`%${table}%`])
  await owner.end()
})

describe('a migration blocked by a long transaction', () => {
  it('keel: the DDL retries on lock_timeout, logs the blocker, the app keeps running, the migration lands after the blocker ends', async () => {
    const dir = migrationsDir({ [`shared/0001_${table}_c.sql`]: `ALTER TABLE ${table} ADD COLUMN c int;` })
    const blocker = await connect('owner')
    const blockerPid = (await blocker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number
    await blocker.query('BEGIN')
    await blocker.query(`SELECT count(*) FROM ${table}`)
    let blockerEnd = Number.POSITIVE_INFINITY
    let firstRetry = Number.POSITIVE_INFINITY
    let done = false
    const traffic = appTraffic(() => done)
    const events: MigrateEvent[] = []
    const migrator = createMigrator({
      connection: readStack().primary.ownerUrl,
      dir,
      lockTimeoutMs: 200,
      onEvent: (e) => {
        events.push(e)
        if (e.type === 'lock-retry') firstRetry = Math.min(firstRetry, performance.now())
      },
    })
    try {
      const running = migrator.up()
      await until(async () => events.filter((e) => e.type === 'lock-retry').length >= 3)
      const check = await connect('owner')
      const before = await check.query(
        'SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2',
        [table, 'c'],
      )
      await check.end()
      expect(before.rowCount).toBe(0)
      await blocker.query('COMMIT')
      blockerEnd = performance.now()
      const result = await running
      done = true
      const queries = await traffic
      expect(result.failed).toEqual([])
      expect(result.applied.map((a) => a.migration)).toEqual([`0001_${table}_c`])
      const retries = events.filter(
        (e): e is Extract<MigrateEvent, { type: 'lock-retry' }> => e.type === 'lock-retry',
      )
      expect(
        retries.some((r) => r.blockers.some((b) => b.pid === blockerPid && (b.query ?? '').includes(table))),
      ).toBe(true)
      // The app was not stalled behind the queued DDL: queries issued after the DDL first waited completed
      // while the blocker still held its lock.
      const servedDuringBlock = queries.filter((q) => q.start > firstRetry && q.end < blockerEnd)
      expect(servedDuringBlock.length).toBeGreaterThan(5)
      console.log(
        `keel runner: app worst latency ${worst(queries)} ms over ${queries.length} queries; ${retries.length} lock retries (lock_timeout 200 ms)`,
      )
    } finally {
      done = true
      await blocker.end().catch(() => undefined)
      await migrator.close()
    }
  })

  it('a naive runner (no lock_timeout): the app queues behind the DDL until the blocker ends', async () => {
    const blocker = await connect('owner')
    await blocker.query('BEGIN')
    await blocker.query(`SELECT count(*) FROM ${table}`)
    let done = false
    const traffic = appTraffic(() => done)
    const naive = await connect('owner')
    const naivePid = (await naive.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number
    const ddl = naive.query(`ALTER TABLE ${table} ADD COLUMN d int`)
    const watcher = await connect('owner')
    await until(async () => {
      const r = await watcher.query('SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1', [naivePid])
      return r.rows[0]?.wait_event_type === 'Lock'
    })
    const queuedAt = performance.now()
    await sleep(1_500)
    await blocker.query('COMMIT')
    const blockerEnd = performance.now()
    await ddl
    await sleep(100)
    done = true
    const queries = await traffic
    // Nothing issued after the DDL queued was served before the blocker ended.
    expect(queries.filter((q) => q.start > queuedAt + 50 && q.end < blockerEnd)).toEqual([])
    expect(queries.some((q) => q.start > queuedAt && q.end > blockerEnd)).toBe(true)
    console.log(
      `naive runner: app worst latency ${worst(queries)} ms (the blocker held 1.5 s after the DDL queued)`,
    )
    await Promise.all([blocker.end(), naive.end(), watcher.end()])
  })
})
