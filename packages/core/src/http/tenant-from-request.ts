import { isIP } from 'node:net'
import { context } from '@opentelemetry/api'
import type { TenantClient } from '../client/tenant-client.js'
import { KeelError } from '../errors.js'
import type { Keel } from '../keel.js'
import { consistencyTokenFrom } from './consistency-carrier.js'
import { type HttpErrorResponse, httpErrorFor } from './http-error.js'
import type { HttpRequestView, ResolvedHttpOptions, TenantSource } from './http-options.js'
import type { HttpServerSpan } from './http-server-span.js'

/** The request's tenant client, or the error response to send instead. */
export type TenantOutcome =
  | { db: TenantClient; error?: undefined }
  | { db?: undefined; error: HttpErrorResponse }

/**
 * The request's tenant client: finds the id where the options say, validates it (keel.tenant), checks
 * `tenantExists`, and resumes the caller's read-your-writes session from the request's token. A
 * KeelError (missing or malformed id: 400, unknown: 404, keel closed: 503) comes back as the response
 * to send; any other error (the app's tenant function or tenantExists failing) rejects. Runs inside
 * the request's span, so the app's lookups are traced under it.
 */
export async function tenantFromRequest<Req extends HttpRequestView>(
  keel: Keel,
  options: ResolvedHttpOptions<Req>,
  req: Req,
  span: HttpServerSpan | undefined,
): Promise<TenantOutcome> {
  const open = () => openTenant(keel, options, req)
  try {
    const db = await (span === undefined ? open() : context.with(span.context, open))
    span?.setTenant(db.tenantId)
    return { db }
  } catch (error) {
    const mapped = httpErrorFor(error)
    if (mapped === undefined) throw error
    span?.setErrorType(mapped.body.error.code)
    return { error: mapped }
  }
}

async function openTenant<Req extends HttpRequestView>(
  keel: Keel,
  options: ResolvedHttpOptions<Req>,
  req: Req,
): Promise<TenantClient> {
  const id = await tenantIdOf(options.tenant, req)
  if (id === undefined || id === '') {
    throw new KeelError(
      'KEEL_TENANT_INVALID',
      `the request names no tenant (looked for the ${options.tenantSourceName})`,
      { details: { source: options.tenantSourceName } },
    )
  }
  const db = keel.tenant(id, { consistencyToken: consistencyTokenFrom(options, req.headers) })
  if (options.tenantExists !== undefined && !(await options.tenantExists(db.tenantId, req))) {
    throw new KeelError('KEEL_TENANT_UNKNOWN', `tenant ${JSON.stringify(db.tenantId)} does not exist`, {
      details: { tenantId: db.tenantId },
    })
  }
  return db
}
function tenantIdOf<Req extends HttpRequestView>(
  source: TenantSource<Req>,
  req: Req,
): string | undefined | Promise<string | undefined> {
  if (typeof source === 'function') return source(req)
  if (source === 'header') return single(req.headers['x-tenant-id'])
  if (source === 'subdomain') return subdomainOf(req.hostname, undefined)
  if ('header' in source) return single(req.headers[source.header.toLowerCase()])
  if ('param' in source) return single((req.params as Record<string, unknown> | undefined)?.[source.param])
  return subdomainOf(req.hostname, source.subdomain.baseDomain)
}

/** A header sent twice arrives as an array (or joined with ", "): neither names one tenant. */
function single(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

/**
 * Without a base domain, only a host of three or more labels has a subdomain: `example.com` and
 * `localhost` would otherwise become tenants. IP addresses never name one.
 */
function subdomainOf(hostname: string | undefined, baseDomain: string | undefined): string | undefined {
  if (hostname === undefined || hostname === '') return undefined
  const host = hostname.toLowerCase().replace(/\.$/, '')
  if (host.startsWith('[') || isIP(host) !== 0) return undefined
  if (baseDomain !== undefined) {
    const suffix = `.${baseDomain.toLowerCase()}`
    if (!host.endsWith(suffix)) return undefined
    const label = host.slice(0, -suffix.length)
    return label.includes('.') ? undefined : label
  }
  const labels = host.split('.')
  return labels.length >= 3 ? labels[0] : undefined
}
