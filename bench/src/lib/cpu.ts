import { readFileSync } from 'node:fs'
import pg from 'pg'

/**
 * CPU accounting for one measured window, so a throughput gap can be attributed: this process (the
 * client: pg, keel and the load loop), the Postgres backends serving the bench's own connections
 * (found by application_name, read from /proc: other clients of the same server do not count), and
 * the whole machine (anything else running shows up as "other"). Linux only; elsewhere the server and
 * machine figures are simply missing.
 */

const CLOCK_TICKS_PER_SECOND = 100 // USER_HZ: 100 on every mainstream Linux build

export interface CpuSnapshot {
  clientUs: number
  /** utime + stime ticks of each of the bench's backends. */
  backends: Map<number, number> | undefined
  machineBusyUs: number | undefined
}

export interface CpuDelta {
  /** CPU seconds used by this process during the window. */
  clientS: number
  /** CPU seconds used by the Postgres backends serving the bench's connections during the window. */
  serverS: number | undefined
  /** Busy CPU seconds of the whole machine during the window (all cores). */
  machineBusyS: number | undefined
}

function procTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return undefined // exited meanwhile, or the server is not on this machine
  }
}

function machineBusyTicks(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal ...
    const idle = (v[3] ?? 0) + (v[4] ?? 0)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
    return total - idle
  } catch {
    return undefined
  }
}

/** Marks the bench's own connections, so only their backends count as server CPU. */
export const BENCH_APPLICATION_NAME = 'keel-bench'

export class CpuMeter {
  readonly #superUrl: string
  #client: pg.Client | undefined
  #postmasterStart: string | undefined
  /** Times the server was found restarted or unreachable (another suite's fault injection, say). */
  restarts = 0

  constructor(superUrl: string) {
    this.#superUrl = superUrl
  }

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#superUrl, application_name: 'bench-cpu-meter' })
    client.on('error', () => undefined)
    await client.connect()
    this.#client = client
  }

  async close(): Promise<void> {
    await this.#client?.end().catch(() => undefined)
    this.#client = undefined
  }

  /** Ticks of every backend serving one of the bench's connections, by pid. */
  async #backendTicks(): Promise<Map<number, number> | undefined> {
    try {
      if (this.#client === undefined) await this.start()
      const { rows } = await this.#client!.query<{ pid: number; postmaster: string }>(
        'SELECT pid, pg_postmaster_start_time()::text AS postmaster FROM pg_stat_activity WHERE application_name LIKE $1',
        [`${BENCH_APPLICATION_NAME}%`],
      )
      const postmaster = rows[0]?.postmaster
      if (postmaster !== undefined) {
        if (this.#postmasterStart !== undefined && postmaster !== this.#postmasterStart) this.restarts++
        this.#postmasterStart = postmaster
      }
      const ticks = new Map<number, number>()
      for (const row of rows) {
        const t = procTicks(row.pid)
        if (t !== undefined) ticks.set(row.pid, t)
      }
      // None readable: Postgres runs elsewhere (another host or container), so there is nothing to report.
      return rows.length > 0 && ticks.size === 0 ? undefined : ticks
    } catch {
      // The server went away (restarted under us): reconnect on the next snapshot.
      this.restarts++
      await this.close()
      return undefined
    }
  }

  async snapshot(): Promise<CpuSnapshot> {
    const usage = process.cpuUsage()
    const backends = await this.#backendTicks()
    const busy = machineBusyTicks()
    return {
      clientUs: usage.user + usage.system,
      backends,
      machineBusyUs: busy === undefined ? undefined : (busy * 1e6) / CLOCK_TICKS_PER_SECOND,
    }
  }

  static delta(from: CpuSnapshot, to: CpuSnapshot): CpuDelta {
    let serverS: number | undefined
    if (from.backends !== undefined && to.backends !== undefined) {
      // Per backend, so a connection that came or went during the window cannot subtract anything.
      let ticks = 0
      for (const [pid, after] of to.backends) ticks += Math.max(0, after - (from.backends.get(pid) ?? 0))
      serverS = ticks / CLOCK_TICKS_PER_SECOND
    }
    return {
      clientS: (to.clientUs - from.clientUs) / 1e6,
      serverS,
      machineBusyS:
        from.machineBusyUs === undefined || to.machineBusyUs === undefined
          ? undefined
          : (to.machineBusyUs - from.machineBusyUs) / 1e6,
    }
  }
}
