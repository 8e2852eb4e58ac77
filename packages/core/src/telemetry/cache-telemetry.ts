import {
  type Attributes,
  type Counter,
  context,
  type Histogram,
  type Meter,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'

// One options object for every span (no allocation per call on the Redis-hit path).
const SPAN_OPTIONS = Object.freeze({ kind: SpanKind.INTERNAL })

export type CacheResult = 'l1_hit' | 'l2_hit' | 'miss' | 'stale' | 'coalesced'

const RESULTS: Record<CacheResult, Attributes> = {
  l1_hit: Object.freeze({ 'keel.cache.result': 'l1_hit' }),
  l2_hit: Object.freeze({ 'keel.cache.result': 'l2_hit' }),
  miss: Object.freeze({ 'keel.cache.result': 'miss' }),
  stale: Object.freeze({ 'keel.cache.result': 'stale' }),
  coalesced: Object.freeze({ 'keel.cache.result': 'coalesced' }),
}

/**
 * The cache's spans and metrics. An L1 hit costs a counter increment and, only when the caller's own
 * span is recording, a child span: an untraced hit stays in the sub-microsecond range.
 */
export class CacheTelemetry {
  readonly #tracer: Tracer
  readonly #requests: Counter
  readonly #loaderDuration: Histogram
  readonly #loaderFailures: Counter
  readonly #breakerOpens: Counter
  readonly #meter: Meter

  constructor(tracer: Tracer, meter: Meter) {
    this.#tracer = tracer
    this.#meter = meter
    this.#requests = meter.createCounter('keel.cache.requests', {
      description: 'cached() calls by result: l1_hit, l2_hit, miss, stale, coalesced',
    })
    this.#loaderDuration = meter.createHistogram('keel.cache.loader.duration', {
      unit: 's',
      description: 'How long cache loaders took',
    })
    this.#loaderFailures = meter.createCounter('keel.cache.loader.failures', {
      description: 'Loaders that threw',
    })
    this.#breakerOpens = meter.createCounter('keel.cache.redis.breaker_opened', {
      description: 'Times the Redis circuit breaker opened (Redis down or slow)',
    })
  }

  hit(tenantId: string | undefined): void {
    this.#requests.add(1, RESULTS.l1_hit)
    const parent = trace.getActiveSpan()
    if (parent?.isRecording() === true) this.#span(tenantId).end()
  }

  /**
   * The span of a call that missed L1, started before Redis is asked; `done` or `failed` ends it. Without
   * a registered SDK it is the API's non-recording span and nothing else is allocated for it.
   */
  start(tenantId: string | undefined): Span {
    return this.#span(tenantId)
  }

  /** Runs `fn` in the span's context when it records, so the loader's queries nest under it. */
  within<T>(span: Span, fn: () => T): T {
    if (!span.isRecording()) return fn()
    return context.with(trace.setSpan(context.active(), span), fn)
  }

  done(span: Span, result: CacheResult): void {
    this.#requests.add(1, RESULTS[result])
    if (span.isRecording()) span.setAttribute('keel.cache.result', result)
    span.end()
  }

  failed(span: Span, error: unknown): void {
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: error instanceof Error ? error.message : String(error),
    })
    span.setAttribute('error.type', error instanceof Error ? error.name : 'Error')
    this.done(span, 'miss')
  }

  #span(tenantId: string | undefined): Span {
    const span = this.#tracer.startSpan('keel.cache get', SPAN_OPTIONS)
    if (span.isRecording()) {
      span.setAttribute('keel.cache.result', 'l1_hit')
      if (tenantId !== undefined) span.setAttribute('keel.tenant.id', tenantId)
    }
    return span
  }

  loaded(ms: number): void {
    this.#loaderDuration.record(ms / 1_000)
  }

  loaderFailed(): void {
    this.#loaderFailures.add(1)
  }

  breaker(open: boolean): void {
    if (open) this.#breakerOpens.add(1)
  }

  observeWaiters(read: () => number): void {
    this.#meter
      .createObservableGauge('keel.cache.waiters', { description: 'Callers waiting for a load in flight' })
      .addCallback((result) => result.observe(read()))
  }
}
