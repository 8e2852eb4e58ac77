import { KeelError } from '../errors.js'

// Whatever the configured pattern allows, these never reach Postgres: they are how ids turn into
// injection or log forgery, and no legitimate tenant id needs them.
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const FORBIDDEN = /[\u0000-\u001f\u007f'"\\;\s]/

/**
 * `identifier`: the id becomes part of a Postgres identifier (schema mode), and Postgres truncates
 * identifiers at 63 BYTES: two long unicode ids sharing their first 63 bytes would name one schema.
 * There the limit counts UTF-8 bytes; elsewhere (a setting's value) characters.
 */
export function validateTenantId(id: unknown, pattern: RegExp, identifier = false): string {
  if (typeof id !== 'string') {
    throw new KeelError(
      'KEEL_TENANT_INVALID',
      `tenant id must be a string, got ${id === null ? 'null' : typeof id}`,
    )
  }
  if (id.length === 0 || id.length > 63) {
    throw new KeelError('KEEL_TENANT_INVALID', `tenant id must be 1 to 63 characters, got ${id.length}`, {
      details: { length: id.length },
    })
  }
  if (identifier && Buffer.byteLength(id, 'utf8') > 63) {
    throw new KeelError('KEEL_TENANT_INVALID', 'tenant id must be at most 63 bytes in UTF-8 in schema mode', {
      details: { bytes: Buffer.byteLength(id, 'utf8') },
    })
  }
  // A global or sticky pattern keeps lastIndex between calls and would accept/reject alternately.
  pattern.lastIndex = 0
  if (FORBIDDEN.test(id) || !pattern.test(id)) {
    throw new KeelError(
      'KEEL_TENANT_INVALID',
      `tenant id ${JSON.stringify(id.slice(0, 63))} is not allowed`,
      {
        details: { pattern: pattern.source },
      },
    )
  }
  return id
}
