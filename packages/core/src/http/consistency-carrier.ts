import type { IncomingHttpHeaders } from 'node:http'
import type { ResolvedCookie, ResolvedHttpOptions } from './http-options.js'

/**
 * The consistency token a request carries: its header, else its cookie (when enabled). Whatever it
 * is, it goes to keel.tenant() as is: a garbage token only makes that session read the primary.
 */
export function consistencyTokenFrom(
  options: Pick<ResolvedHttpOptions<never>, 'consistencyHeader' | 'cookie'>,
  headers: IncomingHttpHeaders,
): string | undefined {
  const header = headers[options.consistencyHeader]
  if (typeof header === 'string' && header !== '') return header
  const cookie = options.cookie
  return cookie === undefined ? undefined : cookieValue(headers.cookie, cookie.name)
}

/**
 * The response headers carrying the session's position to the next request: none until the session
 * has one (after a write, or a valid token came in). `set-cookie` is to be appended, not replace others.
 */
export function consistencyHeaders(
  options: Pick<ResolvedHttpOptions<never>, 'consistencyHeader' | 'cookie'>,
  db: { readonly consistencyToken: string | undefined } | null | undefined,
  secureRequest: boolean,
): Array<readonly [name: string, value: string]> {
  const token = db?.consistencyToken
  if (token === undefined) return []
  const headers: Array<readonly [string, string]> = [[options.consistencyHeader, token]]
  if (options.cookie !== undefined)
    headers.push(['set-cookie', consistencySetCookie(options.cookie, token, secureRequest)])
  return headers
}

/** The Set-Cookie value carrying `token`; `secureRequest` decides Secure unless the options do. */
export function consistencySetCookie(cookie: ResolvedCookie, token: string, secureRequest: boolean): string {
  let value = `${cookie.name}=${encodeURIComponent(token)}; Path=${cookie.path}; Max-Age=${cookie.maxAge}; SameSite=${cookie.sameSite}`
  if (cookie.domain !== undefined) value += `; Domain=${cookie.domain}`
  if (cookie.httpOnly) value += '; HttpOnly'
  if (cookie.secure ?? secureRequest) value += '; Secure'
  return value
}

// A whole cookie parser is not needed for one name; neither framework parses cookies without a plugin.
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue
    const raw = part.slice(eq + 1).trim()
    try {
      return decodeURIComponent(raw)
    } catch {
      return raw
    }
  }
  return undefined
}
