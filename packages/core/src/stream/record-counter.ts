const LF = 0x0a
const QUOTE = 0x22

/**
 * Counts the records that end in a stream of COPY output chunks (the 'progress' event): a record ends at
 * a LF outside quotes. ndjson lines hold no quote character of COPY's (ADR 0044), so every LF ends one;
 * in CSV a quoted field may hold LF, so the scan follows the quotes across chunks (a doubled quote
 * toggles twice, which is the same as staying inside). `lastEnd` lets the export push whole records only.
 */
export class RecordCounter {
  readonly #quoted: boolean
  #inQuotes = false
  /** After count(): the offset just past the last record end in that chunk, 0 when none ended in it. */
  lastEnd = 0

  constructor(quoted: boolean) {
    this.#quoted = quoted
  }

  /** The records that ended in `chunk`. */
  count(chunk: Buffer): number {
    let records = 0
    let at = 0
    this.lastEnd = 0
    if (!this.#quoted) {
      for (;;) {
        const lf = chunk.indexOf(LF, at)
        if (lf < 0) return records
        records++
        at = lf + 1
        this.lastEnd = at
      }
    }
    // The next quote is looked up again only once passed: a chunk without quotes is scanned once.
    let open = -2
    for (;;) {
      if (this.#inQuotes) {
        const close = chunk.indexOf(QUOTE, at)
        if (close < 0) return records
        this.#inQuotes = false
        at = close + 1
        open = -2
        continue
      }
      if (open !== -1 && open < at) open = chunk.indexOf(QUOTE, at)
      const lf = chunk.indexOf(LF, at)
      if (open >= 0 && (lf < 0 || open < lf)) {
        this.#inQuotes = true
        at = open + 1
        continue
      }
      if (lf < 0) return records
      records++
      at = lf + 1
      this.lastEnd = at
    }
  }
}
