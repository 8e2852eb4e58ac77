import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http'

export interface TestRequest {
  method?: string
  path: string
  headers?: Record<string, string>
  body?: unknown
  /** A payload sent as it is (a malformed body), instead of `body` as JSON. */
  raw?: string
}

export interface TestResponse {
  status: number
  headers: OutgoingHttpHeaders
  /** Parsed JSON when the response is JSON, else the text. */
  body: unknown
}

function parseBody(contentType: unknown, text: string): unknown {
  return typeof contentType === 'string' && contentType.includes('json') && text !== ''
    ? JSON.parse(text)
    : text
}

/** A light-my-request response (Fastify's inject() or Express through light-my-request) as a TestResponse. */
export function fromInjected(res: {
  statusCode: number
  headers: OutgoingHttpHeaders
  payload: string
}): TestResponse {
  return {
    status: res.statusCode,
    headers: res.headers,
    body: parseBody(res.headers['content-type'], res.payload),
  }
}

/** Headers and payload for a request with an optional JSON body. */
export function encodeRequest(request: TestRequest): { headers: Record<string, string>; payload?: string } {
  if (request.raw !== undefined) return { headers: { ...request.headers }, payload: request.raw }
  if (request.body === undefined) return { headers: { ...request.headers } }
  return {
    headers: { 'content-type': 'application/json', ...request.headers },
    payload: JSON.stringify(request.body),
  }
}

/**
 * A request over a real socket. node:http rather than fetch: fetch drops a Host header, and the
 * subdomain tests need one.
 */
export function socketRequest(baseUrl: string, request: TestRequest): Promise<TestResponse> {
  const { headers, payload } = encodeRequest(request)
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      new URL(request.path, baseUrl),
      { method: request.method ?? 'GET', headers, agent: false },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          text += chunk
        })
        res.on('end', () => {
          try {
            resolve({
              status: res.statusCode!,
              headers: res.headers,
              body: parseBody(res.headers['content-type'], text),
            })
          } catch (error) {
            reject(error)
          }
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(payload)
  })
}
