export interface ApiResponse<T = unknown> {
  status: number
  body: T
  headers: Headers
  /** The request's trace id (the example sets x-trace-id), to find its spans. */
  traceId: string | undefined
  ms: number
}

export interface ApiRequest {
  tenant?: string
  body?: unknown
  csv?: string
  headers?: Record<string, string>
}

/** The demo's HTTP client: JSON in and out, the tenant as the x-tenant-id header. */
export function apiClient(baseUrl: string) {
  return async function api<T = Record<string, unknown>>(
    method: 'GET' | 'POST',
    path: string,
    request: ApiRequest = {},
  ): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...request.headers }
    if (request.tenant !== undefined) headers['x-tenant-id'] = request.tenant
    let body: string | undefined
    if (request.csv !== undefined) {
      headers['content-type'] = 'text/csv'
      body = request.csv
    } else if (request.body !== undefined) {
      headers['content-type'] = 'application/json'
      body = JSON.stringify(request.body)
    }
    const started = performance.now()
    const res = await fetch(`${baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body }) })
    const text = await res.text()
    const ms = performance.now() - started
    return {
      status: res.status,
      body: (text === '' ? undefined : JSON.parse(text)) as T,
      headers: res.headers,
      traceId: res.headers.get('x-trace-id') ?? undefined,
      ms,
    }
  }
}
