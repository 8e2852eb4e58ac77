import type { IncomingHttpHeaders } from 'node:http'
import {
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import type { Keel } from '../keel.js'

export interface HttpServerSpanInput {
  readonly method: string
  /** The path without the query string (which may carry secrets). */
  readonly path: string
  readonly scheme: 'http' | 'https'
  /** The route template when the framework knows it before the handler (Fastify). */
  readonly route?: string | undefined
  readonly headers: IncomingHttpHeaders
}

const KNOWN_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
])

/** The adapter's tracer, from the provider keel was configured with (else the global one). */
export function httpTracer(keel: Keel, scope: string, version: string): Tracer {
  const provider = keel.config.telemetry.tracerProvider as TracerProvider | undefined
  return (provider ?? trace.getTracerProvider()).getTracer(scope, version)
}

/**
 * A request's HTTP span. When a span is already active (@opentelemetry/instrumentation-http's SERVER
 * span, or the app's own), that one stays the root: this only adds the tenant to it and never ends
 * it. Otherwise it starts a SERVER span continuing the caller's trace (W3C headers, through the
 * global propagator) that keel's database, cache and job spans become children of.
 */
export class HttpServerSpan {
  /** Run the rest of the request in this context so keel's spans find their parent. */
  readonly context: Context
  readonly #span: Span
  readonly #owned: boolean
  readonly #method: string
  #route: string | undefined
  #errorType: string | undefined
  #ended = false

  private constructor(span: Span, ctx: Context, owned: boolean, method: string, route: string | undefined) {
    this.#span = span
    this.context = ctx
    this.#owned = owned
    this.#method = method
    this.#route = route
  }

  static start(tracer: Tracer, input: HttpServerSpanInput): HttpServerSpan {
    const active = context.active()
    const existing = trace.getSpan(active)
    const method = KNOWN_METHODS.has(input.method) ? input.method : '_OTHER'
    if (existing !== undefined) return new HttpServerSpan(existing, active, false, method, input.route)
    const parent = propagation.extract(active, input.headers)
    const span = tracer.startSpan(
      input.route === undefined ? method : `${method} ${input.route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': method,
          'url.path': input.path,
          'url.scheme': input.scheme,
          ...(input.route === undefined ? {} : { 'http.route': input.route }),
        },
      },
      parent,
    )
    return new HttpServerSpan(span, trace.setSpan(parent, span), true, method, input.route)
  }

  setTenant(tenantId: string): void {
    if (this.#span.isRecording()) this.#span.setAttribute('keel.tenant.id', tenantId)
  }

  /** The route template once the framework matched it (Express knows it only in the handler). */
  setRoute(route: string): void {
    this.#route = route
  }

  /** A KeelError code the adapter answered with, reported as error.type on a 5xx. */
  setErrorType(code: string): void {
    this.#errorType = code
  }

  /** Ends the span with the response status (undefined: the connection closed before one was sent). */
  end(statusCode: number | undefined): void {
    if (!this.#owned || this.#ended) return
    this.#ended = true
    const span = this.#span
    if (span.isRecording()) {
      if (this.#route !== undefined) {
        span.setAttribute('http.route', this.#route)
        span.updateName(`${this.#method} ${this.#route}`)
      }
      if (statusCode !== undefined) span.setAttribute('http.response.status_code', statusCode)
      // Server spans: a 4xx is the client's doing, not an error of this server.
      if (statusCode === undefined || statusCode >= 500) {
        span.setAttribute(
          'error.type',
          this.#errorType ?? (statusCode === undefined ? 'aborted' : String(statusCode)),
        )
        span.setStatus({ code: SpanStatusCode.ERROR })
      }
    }
    span.end()
  }
}
