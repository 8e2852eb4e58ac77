import {
  type Context,
  type Counter,
  context,
  type Histogram,
  isSpanContextValid,
  type Meter,
  propagation,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

function parseTraceparent(value: string): SpanContext | undefined {
  const m = TRACEPARENT.exec(value)
  if (m === null) return undefined
  const spanContext = {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: Number.parseInt(m[3]!, 16) & 1,
    isRemote: true,
  }
  return isSpanContextValid(spanContext) ? spanContext : undefined
}

/**
 * Messaging spans for jobs, after the OpenTelemetry messaging conventions: a PRODUCER span at enqueue
 * whose context travels in the job, and a CONSUMER span per attempt, parented by and linked to it.
 */
export class JobTelemetry {
  readonly #tracer: Tracer
  readonly #meter: Meter
  readonly #queue: string
  readonly #wait: Histogram
  readonly #run: Histogram
  readonly #failures: Counter
  readonly #sweepFailures: Counter

  constructor(tracer: Tracer, meter: Meter, queue: string) {
    this.#tracer = tracer
    this.#meter = meter
    this.#queue = queue
    this.#wait = meter.createHistogram('keel.jobs.wait.duration', {
      unit: 's',
      description: 'From when a job could run (enqueue, or the end of its delay) to when an attempt started',
    })
    this.#run = meter.createHistogram('keel.jobs.run.duration', {
      unit: 's',
      description: 'How long job attempts ran',
    })
    this.#failures = meter.createCounter('keel.jobs.failures', {
      description: 'Failed job attempts; keel.job.final=true when no retry remains (a dead letter)',
    })
    this.#sweepFailures = meter.createCounter('keel.jobs.outbox.sweep.failures', {
      description: 'Outbox sweeps that failed: committed jobs of crashed producers wait in the outbox',
    })
  }

  attemptStarted(jobName: string, waitedMs: number): void {
    this.#wait.record(Math.max(0, waitedMs) / 1_000, { 'keel.job.name': jobName })
  }

  attemptEnded(jobName: string, ranMs: number, failed: boolean, final: boolean): void {
    this.#run.record(ranMs / 1_000, { 'keel.job.name': jobName })
    if (failed) this.#failures.add(1, { 'keel.job.name': jobName, 'keel.job.final': final })
  }

  /** A failed outbox sweep, by error code (a Postgres SQLSTATE such as 42501, or keel's code). */
  sweepFailed(error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code
    this.#sweepFailures.add(1, { 'error.type': typeof code === 'string' ? code : 'Error' })
  }

  /** Queue depth by state, read whenever the meter collects. */
  observeDepth(read: () => Promise<Record<string, number>>): void {
    this.#meter
      .createObservableGauge('keel.jobs.queue.depth', { description: 'Jobs in the queue by state' })
      .addCallback(async (result) => {
        const counts = await read().catch(() => undefined)
        for (const [state, count] of Object.entries(counts ?? {})) {
          result.observe(count, { 'messaging.destination.name': this.#queue, 'keel.job.state': state })
        }
      })
  }

  startSend(jobName: string, tenantId: string): { span: Span; carrier: Record<string, string> } {
    const span = this.#tracer.startSpan(`send ${this.#queue}`, {
      kind: SpanKind.PRODUCER,
      attributes: {
        'messaging.system': 'bullmq',
        'messaging.destination.name': this.#queue,
        'messaging.operation.type': 'send',
        'messaging.operation.name': 'enqueue',
        'keel.job.name': jobName,
        'keel.tenant.id': tenantId,
      },
    })
    const carrier: Record<string, string> = {}
    const spanContext = span.spanContext()
    // The W3C traceparent is written by keel itself, so the trace crosses the queue even when the app
    // registered no global propagator; a registered one adds what it carries (tracestate, baggage).
    propagation.inject(trace.setSpan(context.active(), span), carrier)
    if (isSpanContextValid(spanContext)) {
      carrier.traceparent ??= `00-${spanContext.traceId}-${spanContext.spanId}-0${(spanContext.traceFlags & 1).toString(16)}`
    }
    return { span, carrier }
  }

  startProcess(
    jobName: string,
    tenantId: string,
    jobId: string,
    attempt: number,
    carrier: Record<string, string> | undefined,
  ): { span: Span; context: Context } {
    let parent = carrier === undefined ? context.active() : propagation.extract(context.active(), carrier)
    if (trace.getSpanContext(parent) === undefined && carrier?.traceparent !== undefined) {
      const remote = parseTraceparent(carrier.traceparent)
      if (remote !== undefined) parent = trace.setSpanContext(parent, remote)
    }
    const producer = trace.getSpanContext(parent)
    const span = this.#tracer.startSpan(
      `process ${this.#queue}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'bullmq',
          'messaging.destination.name': this.#queue,
          'messaging.operation.type': 'process',
          'messaging.message.id': jobId,
          'keel.job.name': jobName,
          'keel.job.attempt': attempt,
          'keel.tenant.id': tenantId,
        },
        ...(producer === undefined ? {} : { links: [{ context: producer }] }),
      },
      parent,
    )
    return { span, context: trace.setSpan(parent, span) }
  }

  end(span: Span, error?: unknown): void {
    if (error !== undefined) {
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      })
      const code = (error as { code?: unknown } | null)?.code
      span.setAttribute(
        'error.type',
        typeof code === 'string' ? code : error instanceof Error ? error.name : 'Error',
      )
    }
    span.end()
  }
}
