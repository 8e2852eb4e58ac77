import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { applyJobOutbox, type TenantClient } from '../src/index.js'
import { connect, createRlsTable, dropTable } from './support/db.js'
import { testKeel } from './support/keel.js'
import { readStack } from './support/stack.js'
import { waitFor } from './support/wait.js'

// keel.current() inside db.transaction(fn) is the transaction (ADR 0026).
const table = 'current_tx_items'
const keel = testKeel({ pool: { max: 4 }, limits: { tenantConnections: 2, acquireTimeoutMs: 3_000 } })

beforeAll(async () => {
  await createRlsTable(table)
  const owner = await connect('owner')
  await applyJobOutbox(owner, { role: 'keel_app' })
  await owner.end()
})
afterAll(async () => {
  await keel.close()
  await dropTable(table)
})

async function count(db: Pick<TenantClient, 'query'>, body: string): Promise<number> {
  const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE body = $1`, [body])
  return r.rows[0]!.n
}

/** Deep code: knows nothing of the transaction, only keel.current(). */
function deepInsert(body: string) {
  const db = keel.current()
  return db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ($1, $2)`, [db.tenantId, body])
}

describe('keel.current() inside db.transaction', () => {
  it('keel.run(db) entered again inside db.transaction of the same db stays in the transaction', async () => {
    const body = `rerun-${randomBytes(4).toString('hex')}`
    const db = keel.tenant('acme')
    const other = keel.tenant('acme')
    await expect(
      db.transaction(async () => {
        await keel.run(db, () => deepInsert(body))
        await keel.run(db, () =>
          db.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', $1)`, [body]),
        )
        // Another session of the tenant is another session: keel.run(other) is outside the transaction.
        expect(await keel.run(other, () => count(keel.current(), body))).toBe(0)
        expect(await count(db, body)).toBe(2)
        throw new Error('roll back')
      }),
    ).rejects.toThrow('roll back')
    expect(await count(keel.tenant('acme'), body)).toBe(0)
  })

  it('runs deep code in the transaction: it sees the uncommitted insert and rolls back with it', async () => {
    const body = `rb-${randomBytes(4).toString('hex')}`
    const db = keel.tenant('acme')
    const seen: number[] = []
    await expect(
      keel.run(db, () =>
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('acme', $1)`, [body])
          seen.push(await count(keel.current(), body))
          await deepInsert(body)
          seen.push(await count(tx, body))
          // A nested transaction from deep code is a savepoint: its failure undoes only its own work.
          await keel
            .current()
            .transaction(async () => {
              await deepInsert(body)
              seen.push(await count(keel.current(), body))
              throw new Error('inner')
            })
            .catch(() => undefined)
          seen.push(await count(tx, body))
          // The session object itself, inside its own transaction's callback, is the transaction too.
          seen.push(await count(db, body))
          // Another session of the same tenant is not: it does not see uncommitted rows.
          seen.push(await count(keel.tenant('acme'), body))
          throw new Error('roll back')
        }),
      ),
    ).rejects.toThrow('roll back')
    expect(seen).toEqual([1, 2, 3, 2, 2, 0])
    expect(await count(db, body)).toBe(0)
  })

  it('commits deep work with the transaction, and is the plain session again afterwards', async () => {
    const body = `ok-${randomBytes(4).toString('hex')}`
    const db = keel.tenant('acme')
    await db.transaction(async () => {
      await deepInsert(body)
      await keel.current().transaction(() => deepInsert(body))
    })
    expect(await count(db, body)).toBe(2)
    // The savepoint takes no isolation or read-only of its own.
    await expect(
      db.transaction(() => keel.current().transaction(async () => 1, { readOnly: true })),
    ).rejects.toMatchObject({ code: 'KEEL_QUERY_INVALID' })
  })

  it('lets many concurrent requests of one tenant (cap 2) each nest keel.current() calls, none busy', async () => {
    const body = `conc-${randomBytes(4).toString('hex')}`
    for (const n of [5, 24]) {
      const outcomes = await Promise.allSettled(
        Array.from({ length: n }, () => {
          const db = keel.tenant('globex')
          return keel.run(db, () =>
            db.transaction(async (tx) => {
              await tx.query(`INSERT INTO ${table} (tenant_id, body) VALUES ('globex', $1)`, [body])
              await keel.current().query('SELECT pg_sleep(0.02)')
              await deepInsert(body)
              await keel.current().transaction(() => deepInsert(body))
              return count(keel.current(), body)
            }),
          )
        }),
      )
      const failures = outcomes.filter((o) => o.status === 'rejected')
      expect(failures.map((f) => (f.reason as { code?: string }).code)).toEqual([])
    }
    expect(await count(keel.tenant('globex'), body)).toBe((5 + 24) * 3)
  })

  it('enqueues through the transaction’s outbox: a rolled-back transaction enqueues nothing', async () => {
    const k = testKeel({
      jobs: {
        redis: { url: readStack().redis.url },
        queue: `ctx${randomBytes(4).toString('hex')}`,
        outbox: true,
      },
    })
    try {
      k.defineJob('ctx.noop', { schema: z.object({}), handler: async () => undefined })
      const db = k.tenant('acme')
      let jobId = ''
      let inOutbox = 0
      await expect(
        db.transaction(async (tx) => {
          jobId = (await k.current().enqueue('ctx.noop', {})).jobId
          const r = await tx.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM keel_job_outbox WHERE id = $1',
            [jobId],
          )
          inOutbox = r.rows[0]!.n
          throw new Error('roll back')
        }),
      ).rejects.toThrow('roll back')
      expect(inOutbox).toBe(1)
      expect(await db.jobStatus(jobId)).toBeNull()

      // A savepoint that rolls back takes its jobs with it; the transaction's other jobs are relayed.
      let dropped = ''
      let kept = ''
      await db.transaction(async () => {
        await k
          .current()
          .transaction(async () => {
            dropped = (await k.current().enqueue('ctx.noop', {})).jobId
            throw new Error('inner')
          })
          .catch(() => undefined)
        kept = (await k.current().enqueue('ctx.noop', {})).jobId
      })
      // Relayed in order: once the later job is in the queue, the earlier one would be too.
      await waitFor('the kept job to be relayed', async () => (await db.jobStatus(kept)) !== null)
      expect(await db.jobStatus(dropped)).toBeNull()
    } finally {
      await k.close()
    }
  })
})
