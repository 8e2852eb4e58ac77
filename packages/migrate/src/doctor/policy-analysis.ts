import type { Catalog, FunctionInfo, Policy } from './catalog.js'
import { admitsOtherTenants, type ExpressionContext, failsOpen } from './policy-expression.js'

/** What the doctor reads out of one policy expression (deparsed text and node tree). */
export interface ExpressionFacts {
  alwaysTrue: boolean
  readsSetting: boolean
  failsOpen: boolean
  /** With the setting naming a tenant, a row of another tenant can pass (an OR branch not tied to it). */
  admitsOtherTenants: boolean
  castsColumn: boolean
}

const stripParens = (s: string): string => {
  let t = s.trim()
  while (t.startsWith('(') && t.endsWith(')')) t = t.slice(1, -1).trim()
  return t
}

/** `current_setting('app.tenant_id'...)` in the expression, or in the body of a function it calls. */
function readsSetting(text: string, tree: string, setting: string, catalog: Catalog): boolean {
  const needle = `'${setting}'`
  if (text.includes(needle)) return true
  for (const m of tree.matchAll(/:funcid (\d+)/g)) {
    if (catalog.policyFunctions.get(Number(m[1]))?.source.includes(needle)) return true
  }
  return false
}

// A function call or an I/O coercion applied straight to the tenant column (a RELABELTYPE, e.g. varchar
// read as text, is binary-compatible and keeps the index usable, so it is not a cast here).
function castsColumn(tree: string, attnum: number): boolean {
  const re = new RegExp(
    `\\{(?:FUNCEXPR|COERCEVIAIO)\\s[^{}]*?(?::args \\(|:arg )\\{VAR :varno 1 :varattno ${attnum} `,
  )
  return re.test(tree)
}

const contexts = new WeakMap<Catalog, Map<string, ExpressionContext>>()

/** The policy functions (and the app's others) by name, for the evaluator to follow SQL bodies: built once per catalog. */
function expressionContext(catalog: Catalog, setting: string): ExpressionContext {
  let bySetting = contexts.get(catalog)
  if (bySetting === undefined) {
    bySetting = new Map()
    contexts.set(catalog, bySetting)
  }
  let ctx = bySetting.get(setting)
  if (ctx === undefined) {
    const functions = new Map<string, FunctionInfo[]>()
    // The app's own functions, so a body calling another (unqualified) is followed too.
    const all = new Map([...catalog.functions, ...catalog.policyFunctions.values()].map((f) => [f.oid, f]))
    for (const f of all.values()) functions.set(f.name, [...(functions.get(f.name) ?? []), f])
    ctx = { setting, functions }
    bySetting.set(setting, ctx)
  }
  return ctx
}

// Only when the parse tree cannot be evaluated (too many free atoms): the setting itself wrapped in
// COALESCE or tested for NULL, never any IS NULL in the policy.
const FAILS_OPEN_TEXT = [
  /\bCOALESCE\(\s*(NULLIF\(\s*)?current_setting\(/i,
  /current_setting\([^()]*\)(::\w+)?\)*\s+IS\s+NULL\b/i,
]

export function expressionFacts(
  text: string,
  tree: string,
  setting: string,
  attnum: number,
  catalog: Catalog,
): ExpressionFacts {
  const reads = readsSetting(text, tree, setting, catalog)
  const ctx = expressionContext(catalog, setting)
  return {
    alwaysTrue: stripParens(text).toLowerCase() === 'true',
    readsSetting: reads,
    failsOpen: reads && (failsOpen(text, ctx) ?? FAILS_OPEN_TEXT.some((re) => re.test(text))),
    admitsOtherTenants: admitsOtherTenants(text, ctx) ?? false,
    castsColumn: castsColumn(tree, attnum),
  }
}

/**
 * Whether the policy can apply to the runtime role: its TO list names it (PUBLIC or a role it is a
 * member of), and its predicate is not `current_user = '<another role>'` (keel's outbox owner policy).
 */
export function appliesToRuntime(policy: Policy, runtimeRole: string): boolean {
  if (!policy.appliesToRuntime) return false
  const only = /^\(*CURRENT_USER = '([^']+)'::name\)*$/.exec(policy.qual?.trim() ?? '')
  return only === null || only[1] === runtimeRole
}

export const commandName = { r: 'SELECT', a: 'INSERT', w: 'UPDATE', d: 'DELETE', '*': 'ALL' } as const
