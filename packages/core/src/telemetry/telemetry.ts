import {
  type Attributes,
  type Context,
  type Counter,
  context,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import type { HostInfo } from '../pool/host-info.js'
import { sanitizeSql } from './sanitize-sql.js'

const SCOPE = '@keel/core'
const VERSION = '0.1.0'

export interface TelemetryOptions {
  tracerProvider?: object | undefined
  meterProvider?: object | undefined
  queryText: 'sanitized' | 'raw' | 'off'
}

export interface QuerySpanInput {
  readonly text: string
  /** operationName(text), computed once by the caller. */
  readonly operation: string
  readonly tenantId: string
  readonly host: HostInfo
  readonly parent?: Context | undefined
}

/**
 * keel's only door to OpenTelemetry: through @opentelemetry/api, so it costs next to nothing when no
 * SDK is registered (spans are non-recording and attributes are only computed when one records).
 */
export class Telemetry {
  readonly tracer: Tracer
  readonly meter: Meter
  readonly #queryText: TelemetryOptions['queryText']
  readonly #duration: Histogram
  readonly #throttled: Counter
  readonly #routes: Counter
  readonly #ejected: Counter
  readonly #primaryDown: Counter

  readonly #budgetExhausted: Counter
  readonly #okAttributes = new WeakMap<HostInfo, Map<string, Attributes>>()

  constructor(options: TelemetryOptions) {
    const tracerProvider = options.tracerProvider as TracerProvider | undefined
    const meterProvider = options.meterProvider as MeterProvider | undefined
    this.tracer = (tracerProvider ?? trace).getTracer(SCOPE, VERSION)
    this.meter = (meterProvider ?? metrics).getMeter(SCOPE, VERSION)
    this.#queryText = options.queryText
    this.#duration = this.meter.createHistogram('db.client.operation.duration', {
      unit: 's',
      description: 'Duration of database client operations (keel, per statement)',
      advice: { explicitBucketBoundaries: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10] },
    })
    this.#throttled = this.meter.createCounter('keel.tenant.throttled', {
      description: 'Calls refused with KEEL_TENANT_BUSY because the tenant held all its connections',
    })
    this.#routes = this.meter.createCounter('keel.route.decisions', {
      description:
        'Where statements were sent: primary (writes, strong reads), replica, fallback (a read the primary served)',
    })
    this.#budgetExhausted = this.meter.createCounter('keel.connections.budget_exhausted', {
      description:
        'database mode: calls refused with KEEL_POOL_TIMEOUT because the server had no connection to spare within tenancy.maxConnections',
    })
    this.#ejected = this.meter.createCounter('keel.replica.ejected', {
      description:
        'Replicas taken out of read rotation (down, not a replica, or lagging past maxReplicaLagMs)',
    })
    this.#primaryDown = this.meter.createCounter('keel.primary.down', {
      description:
        "Times the primary's probe failed after answering: writes and read-your-writes reads fail fast until it answers (ADR 0043)",
    })
  }

  /** The replica monitor found the primary down (ADR 0043). */
  primaryDown(host: HostInfo): void {
    this.#primaryDown.add(1, { 'server.address': host.address, 'server.port': host.port })
  }

  startQuery(input: QuerySpanInput): Span {
    const operation = input.operation
    const span = this.tracer.startSpan(
      `${operation} ${input.host.database}`,
      { kind: SpanKind.CLIENT },
      input.parent ?? context.active(),
    )
    if (span.isRecording()) {
      const attributes: Attributes = {
        'db.system.name': 'postgresql',
        'db.namespace': input.host.database,
        'db.operation.name': operation,
        'server.address': input.host.address,
        'server.port': input.host.port,
        'keel.tenant.id': input.tenantId,
      }
      if (this.#queryText !== 'off') {
        attributes['db.query.text'] = this.#queryText === 'raw' ? input.text : sanitizeSql(input.text)
      }
      span.setAttributes(attributes)
    }
    return span
  }

  /** Records where a statement ran, once routing decided. */
  setRoute(span: Span, host: HostInfo, route: 'primary' | 'replica' | 'fallback'): void {
    this.#routes.add(1, ROUTE_ATTRIBUTES[route])
    if (span.isRecording()) {
      span.setAttributes({ 'server.address': host.address, 'server.port': host.port, 'keel.route': route })
      if (host.role === 'replica') span.setAttribute('keel.replica.name', host.name)
    }
  }

  replicaEjected(host: HostInfo): void {
    this.#ejected.add(1, { 'keel.replica.name': host.name, 'server.address': host.address })
  }

  /** Reports each replica's replay lag as a gauge, read whenever the meter collects. */
  observeReplicaLag(read: () => ReadonlyArray<{ host: HostInfo; lagMs: number | undefined }>): void {
    const gauge = this.meter.createObservableGauge('keel.replica.lag', {
      unit: 's',
      description: 'How far behind the primary each replica replays WAL',
    })
    gauge.addCallback((result) => {
      for (const { host, lagMs } of read()) {
        if (lagMs !== undefined && Number.isFinite(lagMs)) {
          result.observe(lagMs / 1_000, { 'keel.replica.name': host.name, 'server.address': host.address })
        }
      }
    })
  }

  startTransaction(tenantId: string, host: HostInfo): Span {
    const span = this.tracer.startSpan(`TRANSACTION ${host.database}`, { kind: SpanKind.CLIENT })
    if (span.isRecording()) {
      span.setAttributes({
        'db.system.name': 'postgresql',
        'db.namespace': host.database,
        'db.operation.name': 'TRANSACTION',
        'server.address': host.address,
        'server.port': host.port,
        'keel.tenant.id': tenantId,
      })
    }
    return span
  }

  endSpan(span: Span, error?: unknown): void {
    if (error !== undefined && span.isRecording()) {
      const code = (error as { code?: unknown } | null)?.code
      const errorType = typeof code === 'string' ? code : error instanceof Error ? error.name : 'Error'
      span.setAttribute('error.type', errorType)
      if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code))
        span.setAttribute('db.response.status_code', code)
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      })
    }
    span.end()
  }

  recordDuration(seconds: number, operation: string, host: HostInfo, error?: unknown): void {
    if (error === undefined) {
      // Successful statements share one attribute set per operation: no allocation on the hot path.
      let byOperation = this.#okAttributes.get(host)
      if (byOperation === undefined) {
        byOperation = new Map()
        this.#okAttributes.set(host, byOperation)
      }
      let attributes = byOperation.get(operation)
      if (attributes === undefined) {
        attributes = Object.freeze(durationAttributes(operation, host))
        byOperation.set(operation, attributes)
      }
      this.#duration.record(seconds, attributes)
      return
    }
    const code = (error as { code?: unknown } | null)?.code
    const attributes = durationAttributes(operation, host)
    attributes['error.type'] = typeof code === 'string' ? code : 'Error'
    this.#duration.record(seconds, attributes)
  }

  budgetExhausted(server: string): void {
    this.#budgetExhausted.add(1, { 'server.address': server })
  }

  tenantThrottled(tenantId: string): void {
    this.#throttled.add(1, { 'keel.tenant.id': tenantId })
  }
}

const ROUTE_ATTRIBUTES = {
  primary: Object.freeze({ 'keel.route': 'primary' }),
  replica: Object.freeze({ 'keel.route': 'replica' }),
  fallback: Object.freeze({ 'keel.route': 'fallback' }),
} as const

function durationAttributes(operation: string, host: HostInfo): Attributes {
  return {
    'db.system.name': 'postgresql',
    'db.namespace': host.database,
    'db.operation.name': operation,
    'server.address': host.address,
  }
}
