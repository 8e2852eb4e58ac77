import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { gunzipSync } from 'node:zlib'

/** One span as the receiver keeps it (decoded from OTLP/JSON). */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string | undefined
  name: string
  kind: number
  service: string
  startNs: bigint
  endNs: bigint
  attributes: Record<string, unknown>
  statusCode: number
}

interface OtlpValue {
  stringValue?: string
  intValue?: string | number
  doubleValue?: number
  boolValue?: boolean
  arrayValue?: { values?: OtlpValue[] }
}
interface OtlpAttribute {
  key: string
  value: OtlpValue
}
interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind?: number
  startTimeUnixNano: string | number
  endTimeUnixNano: string | number
  attributes?: OtlpAttribute[]
  status?: { code?: number }
}
interface OtlpExport {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpAttribute[] }
    scopeSpans?: Array<{ spans?: OtlpSpan[] }>
  }>
}

/**
 * A minimal OTLP/HTTP trace receiver (JSON encoding, POST /v1/traces): what the demo exports to, since
 * no tracing backend can be installed here. It answers like a collector and keeps spans in memory.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = []
  readonly #server = http.createServer((req, res) => this.#handle(req, res))

  async listen(): Promise<string> {
    this.#server.listen(0, '127.0.0.1')
    await once(this.#server, 'listening')
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }

  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId)
  }

  /** Waits until the trace has `count` spans matching `predicate` (spans arrive in batches). */
  async waitFor(traceId: string, predicate: (s: ReceivedSpan) => boolean, count = 1, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs
    while (this.trace(traceId).filter(predicate).length < count) {
      if (Date.now() > deadline)
        throw new Error(`trace ${traceId}: spans did not arrive within ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 50))
    }
    return this.trace(traceId)
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end()
        return
      }
      if (!String(req.headers['content-type']).includes('json')) {
        // The demo's exporter sends JSON; protobuf would need a decoder this receiver does not have.
        res.writeHead(415, { 'content-type': 'application/json' }).end('{"message":"send OTLP/JSON"}')
        return
      }
      try {
        let body: Buffer = Buffer.concat(chunks)
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
        this.#ingest(JSON.parse(body.toString('utf8')) as OtlpExport)
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      } catch (error) {
        res
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ message: String(error) }))
      }
    })
  }

  #ingest(payload: OtlpExport): void {
    for (const rs of payload.resourceSpans ?? []) {
      const resource = attributes(rs.resource?.attributes)
      const service = String(resource['service.name'] ?? 'unknown')
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          this.spans.push({
            traceId: hexId(s.traceId),
            spanId: hexId(s.spanId),
            parentSpanId: s.parentSpanId ? hexId(s.parentSpanId) : undefined,
            name: s.name,
            kind: s.kind ?? 0,
            service,
            startNs: BigInt(s.startTimeUnixNano),
            endNs: BigInt(s.endTimeUnixNano),
            attributes: attributes(s.attributes),
            statusCode: s.status?.code ?? 0,
          })
        }
      }
    }
  }
}

function attributes(list: OtlpAttribute[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const a of list ?? []) out[a.key] = value(a.value)
  return out
}

function value(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.boolValue !== undefined) return v.boolValue
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(value)
  return undefined
}

/** OTLP/JSON ids are hex; some encoders send base64 (the protobuf bytes): accept both. */
function hexId(id: string): string {
  return /^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16)
    ? id.toLowerCase()
    : Buffer.from(id, 'base64').toString('hex')
}
