import { KeelError } from '../errors.js'

// Whatever the configured pattern allows, these never reach Postgres: they are how ids turn into
// injection or log forgery, and no legitimate tenant id needs them.
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const FORBIDDEN = /[\u0000-\u001f\u007f'"\\;\s]/

export function validateTenantId(id: unknown, pattern: RegExp): string {
  if (typeof id !== 'string') {
    throw new KeelError(
      'KEEL_INVALID_TENANT',
      `tenant id must be a string, got ${id === null ? 'null' : typeof id}`,
    )
  }
  if (id.length === 0 || id.length > 63) {
    throw new KeelError('KEEL_INVALID_TENANT', `tenant id must be 1 to 63 characters, got ${id.length}`, {
      details: { length: id.length },
    })
  }
  // A global or sticky pattern keeps lastIndex between calls and would accept/reject alternately.
  pattern.lastIndex = 0
  if (FORBIDDEN.test(id) || !pattern.test(id)) {
    throw new KeelError(
      'KEEL_INVALID_TENANT',
      `tenant id ${JSON.stringify(id.slice(0, 63))} is not allowed`,
      {
        details: { pattern: pattern.source },
      },
    )
  }
  return id
}
