import { isKeelError } from '@keel/core'

// ORMs wrap the driver's error each their own way (Drizzle's cause, TypeORM's driverError, Prisma's
// driver-adapter meta, Knex's message prefix): the suite looks through the whole chain for the code.

const CODE_KEYS = ['code', 'originalCode', 'sqlState'] as const

/** Every SQLSTATE or KeelError code found in `err` and what it wraps (cause, driverError, meta, ...). */
export function errorCodes(err: unknown): Set<string> {
  const found = new Set<string>()
  const seen = new Set<unknown>()
  const visit = (value: unknown, depth: number): void => {
    if (value === null || typeof value !== 'object' || seen.has(value) || depth > 6) return
    seen.add(value)
    const record = value as Record<string, unknown>
    if (isKeelError(value)) found.add(value.code)
    for (const key of CODE_KEYS) {
      const code = record[key]
      if (typeof code === 'string') found.add(code)
    }
    for (const key of new Set([...Object.keys(record), 'cause'])) {
      if (key !== 'stack') visit(record[key], depth + 1)
    }
  }
  visit(err, 0)
  return found
}

/** Resolves to the codes of the rejection; fails the test when `promise` resolves. */
export async function rejectionCodes(promise: Promise<unknown>): Promise<Set<string>> {
  try {
    await promise
  } catch (err) {
    return errorCodes(err)
  }
  throw new Error('expected a rejection, the call resolved')
}
