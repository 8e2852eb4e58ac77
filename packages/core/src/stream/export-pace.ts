// db.export()'s maxRowsPerSecond (ADR 0050): the schedule export-stream.ts pauses its COPY by.

/** Below this, being ahead of the pace is not worth a timer (a chunk holds a few hundred rows). */
export const PACE_STEP_MS = 50
/** How far behind the pace an export may fall and then make up at full speed (a slow consumer's debt). */
const PACE_BURST_MS = 100

/**
 * maxRowsPerSecond as a schedule: row n is due at start + n / rate. An export ahead of it waits; one
 * behind it (a slow consumer, a slow server) may catch up by at most PACE_BURST_MS worth of rows, so a
 * stall does not buy a long burst at full speed afterwards.
 */
export class Pace {
  readonly #perRowMs: number
  #start = -1
  #rows = 0
  #timer: NodeJS.Timeout | undefined

  constructor(rowsPerSecond: number) {
    this.#perRowMs = 1_000 / rowsPerSecond
  }

  get waiting(): boolean {
    return this.#timer !== undefined
  }

  /** Counts `rows` read; returns how many ms the export is ahead of its schedule (<= 0: not ahead). */
  took(rows: number): number {
    const now = performance.now()
    if (this.#start < 0) this.#start = now
    this.#rows += rows
    const due = this.#start + this.#rows * this.#perRowMs
    if (now - due > PACE_BURST_MS) this.#start += now - due - PACE_BURST_MS
    return this.#start + this.#rows * this.#perRowMs - now
  }

  wait(ms: number, then: () => void): void {
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      then()
    }, ms)
  }

  cancel(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
