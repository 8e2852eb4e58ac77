import { randomBytes } from 'node:crypto'
import type { Keel, TenantClient } from '@keel/core'

/**
 * The RLS table every conformance app reads and writes: a fresh name per test file, so the replica
 * delayed 1.5 s can never still be showing the table of the previous file under the same name.
 */
export const ITEMS_TABLE = `adapter_items_${randomBytes(4).toString('hex')}`
/** The advisory lock the /hold route waits on (the suite holds it to keep a connection busy). */
export const HOLD_LOCK = 7_160_016

/**
 * What each route of a conformance app does, written once; the adapters' apps only wire them:
 *   GET  {prefix}/items  -> listItems     POST {prefix}/items -> addItem (201)
 *   GET  {prefix}/deep   -> deep          GET  {prefix}/hold  -> hold
 *   GET  {prefix}/boom   -> boom (a plain Error)   GET {prefix}/pg-error -> pgError (a raw Postgres error)
 */
export const conformanceRoutes = {
  async listItems(db: TenantClient) {
    const result = await db.query<{ body: string }>(`SELECT body FROM ${ITEMS_TABLE} ORDER BY id`)
    return { tenant: db.tenantId, bodies: result.rows.map((r) => r.body) }
  },

  async addItem(db: TenantClient, payload: unknown) {
    const body = String((payload as { body?: unknown } | undefined)?.body)
    await db.query(`INSERT INTO ${ITEMS_TABLE} (tenant_id, body) VALUES ($1, $2)`, [db.tenantId, body])
    return { ok: true }
  },

  /** keel.current() in the handler, and in a function awaited after a database call. */
  async deep(keel: Keel, db: TenantClient) {
    const handler = keel.current().tenantId
    await db.query('SELECT 1')
    const deep = await deepTenant(keel)
    return { tenant: db.tenantId, handler, deep }
  },

  /** Holds one of the tenant's connections until the suite releases HOLD_LOCK. */
  async hold(db: TenantClient) {
    await db.query('SELECT pg_advisory_xact_lock($1)', [HOLD_LOCK])
    return { ok: true }
  },

  /** A Postgres error keel passes through as it is (42P01), with the SQL's table name in its message. */
  async pgError(db: TenantClient) {
    await db.query('SELECT secret_column FROM keel_conformance_no_such_table')
    return { ok: true }
  },

  boom(): never {
    throw new Error('boom: postgres://keel_app:app@db.internal/keel')
  },
}

async function deepTenant(keel: Keel): Promise<string> {
  await new Promise((resolve) => setImmediate(resolve))
  const result = await keel
    .current()
    .query<{ tenant: string }>("SELECT current_setting('app.tenant_id') AS tenant")
  return `${keel.current().tenantId}/${result.rows[0]?.tenant}`
}
