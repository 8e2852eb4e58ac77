import type { IncomingHttpHeaders } from 'node:http'
import { KeelError } from '../errors.js'

/** What the adapters read from a request; Express's Request and Fastify's FastifyRequest both fit. */
export interface HttpRequestView {
  readonly headers: IncomingHttpHeaders
  readonly params?: unknown
  /** The Host without its port (both frameworks strip it, and honour their trust-proxy settings). */
  readonly hostname?: string | undefined
}

/**
 * Where a request names its tenant:
 * - `'header'`: the `x-tenant-id` header; `{ header: 'x-org' }` for another one;
 * - `'subdomain'`: the first label of a host with at least three labels (`acme.example.com`);
 *   `{ subdomain: { baseDomain: 'example.com' } }` accepts exactly one label in front of that domain;
 * - `{ param: 'tenantId' }`: a route parameter;
 * - a function of the request (a JWT claim, a session), sync or async; undefined means "none".
 */
export type TenantSource<Req> =
  | 'header'
  | { header: string }
  | 'subdomain'
  | { subdomain: { baseDomain?: string } }
  | { param: string }
  | ((req: Req) => string | undefined | Promise<string | undefined>)

export interface ConsistencyCookieOptions {
  /** @default 'keel-consistency' */
  name?: string
  /** @default '/' */
  path?: string
  domain?: string
  /** @default 'lax' */
  sameSite?: 'strict' | 'lax' | 'none'
  /** @default true when the request came over HTTPS */
  secure?: boolean
  /** @default true: page scripts have no use for the token */
  httpOnly?: boolean
  /** Seconds; keep it above postgres.maxReplicaLagMs. @default 300 */
  maxAge?: number
}

export interface ConsistencyOptions {
  /** Request and response header carrying `db.consistencyToken`. @default 'keel-consistency' */
  header?: string
  /** Also carry the token in a cookie (for browsers that do not echo headers). @default false */
  cookie?: boolean | ConsistencyCookieOptions
}

export interface HealthOptions {
  /** Liveness route, answered without touching the database. @default '/healthz' */
  liveness?: string | false
  /** Readiness route, from keel.health(). @default '/readyz' */
  readiness?: string | false
  /**
   * Whether a down cache Redis makes the instance unready. The cache keeps answering without Redis (L1
   * and loaders), and a shared Redis outage marks every instance unready at once, which leaves a load
   * balancer with none: set false where that matters more than the database load of a cold fleet.
   * @default true
   */
  readinessRequiresRedis?: boolean
}

/** The options both adapters take (each adds its own: Fastify's `keel`, `closeKeel`, `errorHandler`). */
export interface KeelHttpOptions<Req> {
  tenant: TenantSource<Req>
  /** Called with a well-formed id; false answers 404 (KEEL_TENANT_UNKNOWN). Cache it: it runs per request. */
  tenantExists?: (tenantId: string, req: Req) => boolean | Promise<boolean>
  consistency?: ConsistencyOptions
  /** Serve liveness and readiness routes (they need no tenant). @default false */
  health?: boolean | HealthOptions
  /**
   * 'auto': start an HTTP SERVER span per request unless one is already active (e.g. from
   * @opentelemetry/instrumentation-http); false: never. @default 'auto'
   */
  tracing?: 'auto' | false
}

export interface ResolvedCookie {
  readonly name: string
  readonly path: string
  readonly domain: string | undefined
  readonly sameSite: 'Strict' | 'Lax' | 'None'
  readonly secure: boolean | undefined
  readonly httpOnly: boolean
  readonly maxAge: number
}

/** Options checked once when the middleware or plugin is created, then frozen. */
export interface ResolvedHttpOptions<Req> {
  readonly tenant: TenantSource<Req>
  /** How the tenant is looked for, for the 400 message ("header x-tenant-id"). */
  readonly tenantSourceName: string
  readonly tenantExists: KeelHttpOptions<Req>['tenantExists']
  readonly consistencyHeader: string
  readonly cookie: ResolvedCookie | undefined
  readonly liveness: string | undefined
  readonly readiness: string | undefined
  readonly readinessRequiresRedis: boolean
  readonly tracing: boolean
}

const TOKEN = /^[!#$%&'*+.^`|~\w-]+$/

/** Validates adapter options (KEEL_CONFIG_INVALID naming each bad field) and fills in the defaults. */
export function resolveHttpOptions<Req>(options: KeelHttpOptions<Req>): ResolvedHttpOptions<Req> {
  const bad: string[] = []
  const o = (options ?? {}) as KeelHttpOptions<Req>
  const tenantSourceName = describeSource(o.tenant)
  if (tenantSourceName === undefined) bad.push('tenant')
  if (o.tenantExists !== undefined && typeof o.tenantExists !== 'function') bad.push('tenantExists')
  const consistency = o.consistency ?? {}
  const consistencyHeader = consistency.header ?? 'keel-consistency'
  if (!TOKEN.test(consistencyHeader)) bad.push('consistency.header')
  const cookie = resolveCookie(consistency.cookie, bad)
  const health = o.health === true ? {} : o.health === false || o.health === undefined ? undefined : o.health
  const liveness = health === undefined ? undefined : routePath(health.liveness, '/healthz', 'liveness', bad)
  const readiness =
    health === undefined ? undefined : routePath(health.readiness, '/readyz', 'readiness', bad)
  const requiresRedis = health?.readinessRequiresRedis ?? true
  if (typeof requiresRedis !== 'boolean') bad.push('health.readinessRequiresRedis')
  if (o.tracing !== undefined && o.tracing !== 'auto' && o.tracing !== false) bad.push('tracing')
  if (bad.length > 0) {
    throw new KeelError('KEEL_CONFIG_INVALID', `invalid adapter options: ${bad.join(', ')}`, {
      details: { fields: bad },
    })
  }
  return Object.freeze({
    tenant: o.tenant,
    tenantSourceName: tenantSourceName!,
    tenantExists: o.tenantExists,
    consistencyHeader: consistencyHeader.toLowerCase(),
    cookie,
    liveness,
    readiness,
    readinessRequiresRedis: requiresRedis,
    tracing: o.tracing !== false,
  })
}

function describeSource(source: unknown): string | undefined {
  if (source === 'header') return 'header x-tenant-id'
  if (source === 'subdomain') return 'subdomain'
  if (typeof source === 'function') return 'tenant function'
  if (typeof source !== 'object' || source === null) return undefined
  const s = source as Record<string, unknown>
  if (typeof s.header === 'string' && TOKEN.test(s.header)) return `header ${s.header.toLowerCase()}`
  if (typeof s.param === 'string' && s.param !== '') return `route parameter ${s.param}`
  const sub = s.subdomain as { baseDomain?: unknown } | undefined
  if (typeof sub === 'object' && sub !== null) {
    if (sub.baseDomain === undefined) return 'subdomain'
    if (typeof sub.baseDomain === 'string' && sub.baseDomain !== '') return `subdomain of ${sub.baseDomain}`
  }
  return undefined
}

function resolveCookie(cookie: ConsistencyOptions['cookie'], bad: string[]): ResolvedCookie | undefined {
  if (cookie === undefined || cookie === false) return undefined
  const c = cookie === true ? {} : cookie
  const name = c.name ?? 'keel-consistency'
  if (!TOKEN.test(name)) bad.push('consistency.cookie.name')
  const sameSite = c.sameSite ?? 'lax'
  if (!['strict', 'lax', 'none'].includes(sameSite)) bad.push('consistency.cookie.sameSite')
  const maxAge = c.maxAge ?? 300
  if (!Number.isInteger(maxAge) || maxAge <= 0) bad.push('consistency.cookie.maxAge')
  const path = c.path ?? '/'
  if (!path.startsWith('/') || /[;\s]/.test(path)) bad.push('consistency.cookie.path')
  if (c.domain !== undefined && !/^[\w.-]+$/.test(c.domain)) bad.push('consistency.cookie.domain')
  return Object.freeze({
    name,
    path,
    domain: c.domain,
    sameSite: sameSite === 'strict' ? 'Strict' : sameSite === 'none' ? 'None' : 'Lax',
    // SameSite=None is only honoured on Secure cookies.
    secure: c.secure ?? (sameSite === 'none' ? true : undefined),
    httpOnly: c.httpOnly ?? true,
    maxAge,
  })
}

function routePath(
  value: string | false | undefined,
  fallback: string,
  field: string,
  bad: string[],
): string | undefined {
  if (value === false) return undefined
  const path = value ?? fallback
  if (typeof path !== 'string' || !path.startsWith('/')) bad.push(`health.${field}`)
  return path
}
