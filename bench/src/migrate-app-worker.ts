/**
 * The app of the migrate and backfill benchmarks, in a process of its own (forked by bench/dist/migrate.js and
 * backfill.js): the app is never in the migrator's process, and sharing one event loop would charge the
 * migrator's JavaScript to the app's latency. It runs `clients` connections issuing `sql` with a random
 * integer parameter in [1, maxParam] in a loop, or, with `tables`, a random table of the list (schema
 * qualified) with `sql` containing `{table}`.
 *
 * Protocol (IPC): { type: 'start', url, clients, sql, maxParam, tables? } -> { type: 'started' };
 * { type: 'stop' } -> { type: 'stopped', samples: number[] } (then it exits). Not meant to be run by hand.
 */
import pg from 'pg'

interface Start {
  type: 'start'
  url: string
  clients: number
  sql: string
  maxParam: number
  tables?: string[]
}

let running = false
let workers: Promise<void>[] = []
const samples: number[] = []

async function client(start: Start): Promise<void> {
  const c = new pg.Client({ connectionString: start.url })
  await c.connect()
  try {
    while (running) {
      const table = start.tables?.[Math.floor(Math.random() * start.tables.length)]
      const sql = table === undefined ? start.sql : start.sql.replace('{table}', table)
      const t0 = performance.now()
      await c.query(sql, [1 + Math.floor(Math.random() * start.maxParam)])
      samples.push(performance.now() - t0)
    }
  } finally {
    await c.end()
  }
}

process.on('message', (message: Start | { type: 'stop' }) => {
  if (message.type === 'start') {
    running = true
    workers = Array.from({ length: message.clients }, () => client(message))
    process.send?.({ type: 'started' })
  } else if (message.type === 'stop') {
    running = false
    void Promise.all(workers).then(() => {
      process.send?.({ type: 'stopped', samples }, undefined, {}, () => process.exit(0))
    })
  }
})
