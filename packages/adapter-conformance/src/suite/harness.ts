// What every group of the conformance suite shares: the app an adapter builds, a client of it over
// either transport, and the error assertions.
import type { RequestListener } from 'node:http'
import type { Keel } from '@keel/core'
import type { HttpRequestView, KeelHttpOptions } from '@keel/core/http'
import { expect } from 'vitest'
import { socketRequest, type TestRequest, type TestResponse } from '../http-client.js'

export interface AppSetup {
  keel: Keel
  /** The adapter's shared options (Fastify's harness adds `keel` and `closeKeel: false`). */
  options: KeelHttpOptions<HttpRequestView>
  /** Where the routes of conformance-routes.ts are mounted: '' or '/t/:tenantId' ({ param } tests). */
  prefix: string
  /** Stands in for @opentelemetry/instrumentation-http: wraps the socket server's request listener. */
  wrap?: ((listener: RequestListener) => RequestListener) | undefined
}

export interface AdapterApp {
  /** In-process: Fastify's inject(), light-my-request for Express. */
  inject(request: TestRequest): Promise<TestResponse>
  /** Listens on 127.0.0.1:0; resolves with the base URL. */
  listen(): Promise<string>
  close(): Promise<void>
}

export type MakeApp = (setup: AppSetup) => Promise<AdapterApp>

export type Transport = 'inject' | 'socket'

export interface Client {
  request(request: TestRequest): Promise<TestResponse>
}

export const asTenant = (tenant: string) => ({ 'x-tenant-id': tenant })
export const unique = () => Math.random().toString(36).slice(2, 10)

export interface ErrorBody {
  error: { code: string; message: string }
}

export type WithApp = (
  setup: Omit<AppSetup, 'keel' | 'prefix'> & { keel?: Keel; prefix?: string },
  run: (client: Client) => Promise<void>,
) => Promise<void>

export async function clientFor(app: AdapterApp, transport: Transport): Promise<Client> {
  if (transport === 'inject') return { request: (r) => app.inject(r) }
  const base = await app.listen()
  return { request: (r) => socketRequest(base, r) }
}

export function expectError(res: TestResponse, status: number, code: string): void {
  expect({ status: res.status, code: (res.body as ErrorBody).error?.code }).toEqual({ status, code })
  expect(typeof (res.body as ErrorBody).error.message).toBe('string')
}
