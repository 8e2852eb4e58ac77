import { Writable } from 'node:stream'
import { applyRlsPolicy, createKeel, type Keel } from '@keel/core'
import pg from 'pg'
import { envNumber } from './env.js'
import { readStack } from './stack.js'

// The export benchmark's fixture (bench/src/export.ts): its settings, the big and small tenants' table,
// the sink that discards, and the COPY statements keel sends.

export const settings = {
  rows: Math.round(envNumber('BENCH_EXPORT_ROWS', 300_000)),
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3)),
  seconds: envNumber('BENCH_SECONDS', 4),
  concurrency: Math.round(envNumber('BENCH_CONCURRENCY', 8)),
  batchSize: process.env.BENCH_EXPORT_BATCH ? Math.round(envNumber('BENCH_EXPORT_BATCH', 1_000)) : undefined,
  /** maxRowsPerSecond of the paced export in the neighbours' run. */
  /** maxRowsPerSecond of the paced runs (comma-separated), each beside an unpaced run. */
  paces: (process.env.BENCH_EXPORT_PACES ?? '10000,25000,50000')
    .split(',')
    .map((p) => Math.round(Number(p)))
    .filter((p) => p > 0),
  /** The neighbours' p99 moves more between rounds than throughput does: more rounds, the median. */
  neighbourRounds: Math.round(envNumber('BENCH_NEIGHBOUR_ROUNDS', 5)),
  smallTenants: 40,
  smallRows: 100,
}

export const TABLE = 'bench_export_items'
export const BIG = 'megacorp'

/** Discards what it is given, counting bytes and (text formats) lines. */
export function countingSink(): Writable & { bytes: number; lines: number } {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      sink.bytes += chunk.length
      let at = chunk.indexOf(10)
      while (at !== -1) {
        sink.lines++
        at = chunk.indexOf(10, at + 1)
      }
      callback()
    },
  }) as Writable & { bytes: number; lines: number }
  sink.bytes = 0
  sink.lines = 0
  return sink
}

export function appKeel(max: number): Keel {
  return createKeel({
    postgres: { primary: { connectionString: readStack().primary.url }, pool: { max } },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
  })
}

export async function setup(): Promise<void> {
  const stack = readStack()
  const su = new pg.Client({ connectionString: stack.primary.superUrl })
  await su.connect()
  try {
    const have = await su
      .query<{ n: string }>(`SELECT count(*)::text AS n FROM ${TABLE} WHERE tenant_id = $1`, [BIG])
      .catch(() => undefined)
    if (have?.rows[0]?.n === String(settings.rows)) return
    const owner = new pg.Client({ connectionString: stack.primary.ownerUrl })
    await owner.connect()
    await owner.query(`DROP TABLE IF EXISTS ${TABLE}`)
    await owner.query(`CREATE TABLE ${TABLE} (
      tenant_id text NOT NULL, id bigint NOT NULL, customer text NOT NULL, amount numeric(12,2) NOT NULL,
      status text NOT NULL, created_at timestamptz NOT NULL, attrs jsonb NOT NULL, PRIMARY KEY (tenant_id, id))`)
    await applyRlsPolicy(owner, { table: TABLE })
    await owner.end()
    const insert = (tenant: string, n: number) =>
      su.query(
        `INSERT INTO ${TABLE} SELECT $1, g, 'customer ' || (g % 997), (g % 100000) / 100.0,
           (ARRAY['open','paid','void'])[1 + g % 3], timestamptz '2026-01-01' + g * interval '1 minute',
           jsonb_build_object('region', 'eu-' || (g % 5), 'seats', g % 50)
           FROM generate_series(1, $2) g`,
        [tenant, n],
      )
    await insert(BIG, settings.rows)
    for (let i = 0; i < settings.smallTenants; i++) await insert(`small${i}`, settings.smallRows)
    await su.query(`VACUUM ANALYZE ${TABLE}`)
  } finally {
    await su.end()
  }
}

export interface KeelStatements {
  ndjson: string
  csv: string
}

/**
 * The COPY statement keel sends for each format, read off pg_stat_activity while a keel export (its
 * consumer not reading) holds it open: the raw baseline of the same bytes runs exactly that text.
 */
export async function keelStatements(): Promise<KeelStatements> {
  const application = 'keel-bench-export-capture'
  const keel = createKeel({
    postgres: { primary: { connectionString: readStack().primary.url }, applicationName: application },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
  })
  const su = new pg.Client({ connectionString: readStack().primary.superUrl })
  await su.connect()
  try {
    const capture = async (format: 'ndjson' | 'csv') => {
      const out = keel.tenant(BIG).export({ tables: [TABLE], format })
      out.once('data', () => out.pause())
      try {
        for (let i = 0; i < 200; i++) {
          const r = await su.query<{ query: string }>(
            // The other format's backend may still be closing: match this format's statement.
            `SELECT query FROM pg_stat_activity
              WHERE application_name = $1 AND state = 'active' AND query LIKE 'COPY (%' AND query LIKE $2`,
            [application, format === 'csv' ? '%HEADER%' : '%row_to_json%'],
          )
          if (r.rows[0] !== undefined) return r.rows[0].query
          await new Promise((resolve) => setTimeout(resolve, 10))
        }
        throw new Error(`keel's ${format} COPY statement was not seen in pg_stat_activity`)
      } finally {
        out.destroy()
      }
    }
    return { ndjson: await capture('ndjson'), csv: await capture('csv') }
  } finally {
    await su.end()
    await keel.close()
  }
}
