/**
 * Opens after `threshold` consecutive failures and stays open `resetMs`; then one call is let through
 * as a probe, and its success closes it (a failure opens it again at once).
 */
export class CircuitBreaker {
  readonly #threshold: number
  readonly #resetMs: number
  readonly #onChange: (open: boolean) => void
  #failures = 0
  #openUntil = 0
  #open = false

  constructor(threshold: number, resetMs: number, onChange: (open: boolean) => void) {
    this.#threshold = threshold
    this.#resetMs = resetMs
    this.#onChange = onChange
  }

  allows(): boolean {
    return !this.#open || Date.now() >= this.#openUntil
  }

  success(): void {
    this.#failures = 0
    if (this.#open) {
      this.#open = false
      this.#onChange(false)
    }
  }

  failure(): void {
    this.#failures++
    if (this.#failures >= this.#threshold) {
      this.#openUntil = Date.now() + this.#resetMs
      if (!this.#open) {
        this.#open = true
        this.#onChange(true)
      }
    }
  }

  get open(): boolean {
    return this.#open
  }
}
