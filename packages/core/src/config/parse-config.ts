import type { z } from 'zod'
import { KeelError } from '../errors.js'
import { configSchema, type KeelConfig, type ResolvedConfig } from './config-schema.js'

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value) && !(value instanceof RegExp)) {
    // Providers and loggers belong to the caller: freezing them would break their internals.
    const proto = Object.getPrototypeOf(value)
    if (proto !== Object.prototype && proto !== Array.prototype) return value
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.join('.') : '(root)'
  return `${path}: ${issue.message}`
}

/**
 * Validates and freezes the config once. The message names each bad field but never echoes values,
 * so a password in a connection string cannot leak into logs through a config mistake.
 */
export function parseConfig(input: unknown): Readonly<ResolvedConfig> {
  const result = configSchema.safeParse(input)
  if (!result.success) {
    const issues = result.error.issues
    const fields = issues.map((i) => (i.path.length > 0 ? i.path.join('.') : '(root)'))
    throw new KeelError(
      'KEEL_CONFIG_INVALID',
      `invalid keel config: ${issues.map(describeIssue).join('; ')}`,
      {
        details: { fields },
      },
    )
  }
  return deepFreeze(result.data)
}

export type { KeelConfig, ResolvedConfig }
