import {
  type Context,
  context,
  isSpanContextValid,
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
  readonly #queue: string

  constructor(tracer: Tracer, queue: string) {
    this.#tracer = tracer
    this.#queue = queue
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
