import type { MigrateEvent } from '../config/migrator-options.js'
import type { UpResult } from '../migrator/create-migrator.js'

const label = (tenant: string | null) => (tenant === null ? 'shared' : `tenant ${tenant}`)
const seconds = (ms: number) => (ms < 1_000 ? `${ms} ms` : `${(ms / 1_000).toFixed(1)} s`)

/**
 * What a person follows during `keel migrate up`: on a TTY, one live line (bar, counts, rate, ETA) with
 * failures and lock waits printed above it; in CI logs (not a TTY), one line per tenant and a summary.
 * Written by hand: a bar is a dozen lines, not a dependency (ADR 0036).
 */
export class FleetProgress {
  readonly #out: NodeJS.WriteStream
  readonly #tty: boolean
  #total = 0
  #done = 0
  #failed = 0
  #started = Date.now()
  #lastDraw = 0
  /** When each backfill (tenant + migration + table) last printed a line: at most one every few seconds. */
  readonly #backfillLines = new Map<string, number>()

  constructor(out: NodeJS.WriteStream = process.stdout) {
    this.#out = out
    this.#tty = out.isTTY === true && process.env.CI === undefined
  }

  handle = (event: MigrateEvent): void => {
    switch (event.type) {
      case 'fleet-start':
        this.#total = event.tenants
        this.#started = Date.now()
        break
      case 'scope-done':
        if (event.tenant !== null) this.#done++
        if (!this.#tty || event.tenant === null) {
          this.#line(`✓ ${label(event.tenant)}: ${event.applied} applied (${seconds(event.durationMs)})`)
        }
        break
      case 'scope-failed':
        if (event.tenant !== null) {
          this.#done++
          this.#failed++
        }
        this.#line(
          `✗ ${label(event.tenant)}${event.migration ? ` ${event.migration}` : ''}: ${event.error.message}`,
        )
        break
      case 'scope-skipped':
        if (!this.#tty) this.#line(`- ${label(event.tenant)}: skipped (${event.reason})`)
        break
      case 'scope-waiting':
        this.#line(`… ${label(event.tenant)}: waiting (${event.reason})`)
        break
      case 'lock-retry': {
        const who = event.blockers
          .map(
            (b) =>
              `pid ${b.pid} ${b.state ?? ''} for ${b.transactionAgeMs ?? '?'} ms: ${(b.query ?? '').replace(/\s+/g, ' ').slice(0, 120)}`,
          )
          .join('; ')
        this.#line(
          `⟳ ${label(event.tenant)} ${event.migration}: lock_timeout hit (attempt ${event.attempt}), retrying in ${event.delayMs} ms${who ? `; blocked by ${who}` : ''}`,
        )
        break
      }
      case 'index-rebuilt':
        this.#line(
          `⚒ ${label(event.tenant)}: INVALID index ${event.index} ${event.action === 'drop' ? 'dropped' : 'rebuilt'}`,
        )
        break
      case 'lint':
        this.#line(`! ${event.migration}:${event.line} ${event.rule}: ${event.message}`)
        break
      case 'log':
        this.#line(`· ${label(event.tenant)} ${event.migration}: ${event.message}`)
        break
      case 'backfill-progress': {
        if (event.waiting !== undefined) break
        const done = event.totalEstimate > 0 && event.rowsDone >= event.totalEstimate
        if (!this.#due(`${event.tenant}/${event.migration}/${event.table}`, done)) break
        const pct =
          event.totalEstimate > 0 ? Math.min(100, (event.rowsDone / event.totalEstimate) * 100) : 100
        this.#line(
          `▸ ${label(event.tenant)} ${event.migration}: backfill ${event.table} ${event.rowsDone}/~${event.totalEstimate} rows (${pct.toFixed(0)}%) · ${Math.round(event.rate)} rows/s · ETA ${event.etaMs === undefined ? '?' : seconds(event.etaMs)}`,
        )
        break
      }
      case 'backfill-waiting':
        if (!this.#due(`${event.tenant}/${event.migration}/waiting`, false)) break
        this.#line(
          `… ${label(event.tenant)} ${event.migration}: backfill waiting for replica lag: ${event.replica ?? 'a replica'} replays ${seconds(event.lagMs)} behind (maxReplicaLagMs ${event.maxReplicaLagMs}); see docs/runbooks/backfill-waiting-for-replica-lag.md`,
        )
        break
      default:
        break
    }
    if (this.#tty && this.#total > 0) this.#draw()
  }

  /** Whether a throttled line (backfill progress, lag waits) may print now: the first, the last, then every 2 s. */
  #due(key: string, last: boolean): boolean {
    const now = Date.now()
    const before = this.#backfillLines.get(key)
    if (!last && before !== undefined && now - before < 2_000) return false
    this.#backfillLines.set(key, now)
    return true
  }

  #line(text: string): void {
    if (this.#tty) this.#out.write('\r\x1b[2K')
    this.#out.write(`${text}\n`)
  }

  #draw(): void {
    const now = Date.now()
    if (now - this.#lastDraw < 80 && this.#done < this.#total) return
    this.#lastDraw = now
    const width = 24
    const filled = Math.round((this.#done / this.#total) * width)
    const rate = this.#done / Math.max((now - this.#started) / 1_000, 0.001)
    const eta = rate > 0 ? Math.round((this.#total - this.#done) / rate) : 0
    this.#out.write(
      `\r\x1b[2K[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${this.#done}/${this.#total} tenants · ${rate.toFixed(1)}/s · ETA ${eta}s${this.#failed > 0 ? ` · ${this.#failed} failed` : ''}`,
    )
  }

  summary(result: UpResult): void {
    if (this.#tty) this.#out.write('\r\x1b[2K')
    const migrated =
      result.tenants - result.failed.filter((f) => f.tenant !== null).length - result.skipped.length
    this.#out.write(
      `${result.failed.length === 0 ? 'done' : 'FAILED'}: ${result.applied.length} migration(s) applied, ${migrated}/${result.tenants} tenant(s) migrated, ${result.failed.length} failed, ${result.skipped.length} skipped${result.rebuiltIndexes.length > 0 ? `, ${result.rebuiltIndexes.length} INVALID index(es) rebuilt` : ''} in ${seconds(result.durationMs)}\n`,
    )
    for (const f of result.failed) {
      this.#out.write(`  ✗ ${label(f.tenant)}${f.migration ? ` ${f.migration}` : ''}: ${f.error.message}\n`)
    }
  }
}
