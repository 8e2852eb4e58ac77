import type { Catalog, Policy } from './catalog.js'

/** What the doctor reads out of one policy expression (deparsed text and node tree). */
export interface ExpressionFacts {
  alwaysTrue: boolean
  readsSetting: boolean
  failsOpen: boolean
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

export function expressionFacts(
  text: string,
  tree: string,
  setting: string,
  attnum: number,
  catalog: Catalog,
): ExpressionFacts {
  const reads = readsSetting(text, tree, setting, catalog)
  return {
    alwaysTrue: stripParens(text).toLowerCase() === 'true',
    readsSetting: reads,
    // COALESCE(setting, column) or `setting IS NULL OR ...`: with the setting unset every row passes.
    failsOpen: reads && (/\bCOALESCE\(/i.test(text) || /\bIS NULL\b/i.test(text)),
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
