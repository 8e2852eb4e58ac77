import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { z } from 'zod'
import { configSchema } from '../src/config/config-schema.js'
import { repoRoot } from './support/stack.js'

type AnySchema = z.core.$ZodType

/** Leaf option paths of the config schema (through defaults, optionals, unions of objects). */
function leafPaths(schema: AnySchema, prefix: string, out: Set<string>): Set<string> {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string }
  switch (def.type) {
    case 'default':
    case 'prefault':
    case 'optional':
    case 'nullable':
    case 'pipe':
      return leafPaths((def.innerType ?? def.in) as AnySchema, prefix, out)
    case 'object': {
      for (const [key, child] of Object.entries(def.shape as Record<string, AnySchema>)) {
        leafPaths(child, prefix ? `${prefix}.${key}` : key, out)
      }
      return out
    }
    case 'array': {
      // The array itself is an option; the fields of its object elements are too.
      out.add(prefix)
      const element = def.element as AnySchema
      if ((element._zod.def as { type: string }).type === 'object') leafPaths(element, prefix, out)
      return out
    }
    case 'union':
      for (const option of def.options as AnySchema[]) {
        const d = option._zod.def as { type: string }
        if (d.type === 'object') leafPaths(option, prefix, out)
        else out.add(prefix)
      }
      if (![...out].some((p) => p.startsWith(`${prefix}.`))) out.add(prefix)
      return out
    default:
      out.add(prefix)
      return out
  }
}

describe('configuration reference', () => {
  it('README documents every option of the zod schema, and no option that does not exist', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Error codes'))
    const documented = new Set([...section.matchAll(/^\| `([a-zA-Z0-9._]+)` \|/gm)].map((m) => m[1]!))
    const actual = leafPaths(configSchema, '', new Set())
    // The union's discriminated variants share paths (tenancy.mode) and some options are per-variant.
    expect([...actual].filter((p) => !documented.has(p)).sort()).toEqual([])
    // A documented parent (cache.redis) is fine when its fields exist.
    const exists = (p: string) => actual.has(p) || [...actual].some((a) => a.startsWith(`${p}.`))
    expect([...documented].filter((p) => !exists(p)).sort()).toEqual([])
  })
})
