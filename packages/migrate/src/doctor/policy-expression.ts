import { parseSync } from 'libpg-query'
import type { FunctionInfo } from './catalog.js'

/**
 * What a policy expression does when the tenant setting is unset, empty, or names a tenant, decided on
 * Postgres' own parse tree of the deparsed expression (libpg-query), not on its text: `deleted_at IS
 * NULL` next to the tenant predicate is harmless, `current_setting(...) IS NULL OR ...` is not.
 *
 * The expression is evaluated in three worlds: the setting unset (NULL), empty ('', what a pooled
 * connection sees after any transaction-local set_config) and set to a tenant, against a row of another
 * tenant: a column compared with the setting is false there (the row carries another key), a column
 * compared with itself is true. What the evaluator cannot decide (another column's value, a call it
 * cannot see into) is a free atom, true, false or NULL alike in every world; each assignment is tried.
 */

type Tri = 'T' | 'F' | 'N'
type Val =
  | { k: 'null' }
  | { k: 'const'; v: string; fromSetting: boolean }
  | { k: 'bool'; v: Tri }
  | { k: 'col'; name: string }
  // fromSetting: a value computed from the setting (a call reading it): a row of another tenant does
  // not match it, whatever the computation.
  | { k: 'opaque'; key: string; fromSetting?: boolean }
  // The statement fails (current_setting without missing_ok on an unset setting): nothing passes.
  | { k: 'error' }
type World = 'unset' | 'empty' | 'set'
type Node = Record<string, unknown>

export interface ExpressionContext {
  setting: string
  /** Functions the policies call (not pg_catalog's), by name: SQL bodies of one SELECT are followed. */
  functions: ReadonlyMap<string, FunctionInfo[]>
}

const SET_VALUE = '\u0001keel-doctor-tenant'
// 3^6 assignments in three worlds: beyond that the evaluator says nothing rather than guess.
const MAX_ATOMS = 6
const MAX_DEPTH = 4

/** The parse tree of a deparsed expression (pg_get_expr), or undefined when it does not parse. */
export function parseExpression(text: string): Node | undefined {
  return selectTarget(`SELECT ${text}`)
}

function selectTarget(sql: string): Node | undefined {
  try {
    const tree = parseSync(sql) as { stmts?: Array<{ stmt?: Node }> }
    if (tree.stmts?.length !== 1) return undefined
    const select = tree.stmts[0]?.stmt?.SelectStmt as Node | undefined
    return onlyTarget(select)
  } catch {
    return undefined
  }
}

/** `SELECT expr` with no FROM, WHERE or set operation: its one expression. */
function onlyTarget(select: Node | undefined): Node | undefined {
  if (select === undefined) return undefined
  const targets = select.targetList as Node[] | undefined
  if (targets?.length !== 1 || select.fromClause !== undefined || select.whereClause !== undefined)
    return undefined
  if (select.op !== undefined && select.op !== 'SETOP_NONE') return undefined
  return (targets[0]?.ResTarget as Node | undefined)?.val as Node | undefined
}

const stable = (node: unknown): string =>
  JSON.stringify(node, (key, value) => (key === 'location' ? undefined : value))

const strings = (list: unknown): string[] =>
  Array.isArray(list)
    ? list.map((n) => ((n as Node).String as { sval?: string } | undefined)?.sval ?? '')
    : []

class Evaluator {
  readonly atoms = new Map<string, Tri>()
  assignment: Map<string, Tri> | undefined
  private readonly bound: Array<Map<string, Val>> = []

  constructor(
    private readonly ctx: ExpressionContext,
    private readonly world: World,
  ) {}

  private atom(key: string): Tri {
    if (!this.atoms.has(key)) this.atoms.set(key, 'T')
    return this.assignment?.get(key) ?? 'T'
  }

  truth(node: Node, params: Val[] = [], depth = 0): Tri {
    return this.asTruth(this.value(node, params, depth), node)
  }

  private asTruth(v: Val, node: Node): Tri {
    switch (v.k) {
      case 'bool':
        return v.v
      case 'null':
      case 'error':
        return 'N'
      case 'const':
        return /^(t|true|on|yes|1)$/i.test(v.v) ? 'T' : /^(f|false|off|no|0)$/i.test(v.v) ? 'F' : 'N'
      case 'col':
        return this.atom(`col:${v.name}`)
      default:
        return this.atom(v.key || stable(node))
    }
  }

  private settingValue(missingOk: boolean): Val {
    if (this.world === 'set') return { k: 'const', v: SET_VALUE, fromSetting: true }
    if (this.world === 'empty') return { k: 'const', v: '', fromSetting: true }
    // Without missing_ok an unset setting raises an error: closed, and nothing to reason about.
    return missingOk ? { k: 'null' } : { k: 'error' }
  }

  value(node: Node, params: Val[], depth: number): Val {
    const [type, body] = Object.entries(node)[0] ?? ['', {}]
    const n = body as Node
    const opaque = (): Val => ({ k: 'opaque', key: stable(node) })
    switch (type) {
      case 'A_Const': {
        if (n.isnull === true) return { k: 'null' }
        if (n.boolval !== undefined) return { k: 'bool', v: (n.boolval as Node).boolval === true ? 'T' : 'F' }
        const s = (n.sval as { sval?: string } | undefined)?.sval
        if (s !== undefined || n.sval !== undefined) return { k: 'const', v: s ?? '', fromSetting: false }
        const i = n.ival as { ival?: number } | undefined
        if (i !== undefined) return { k: 'const', v: String(i.ival ?? 0), fromSetting: false }
        return opaque()
      }
      case 'TypeCast': {
        const v = this.value(n.arg as Node, params, depth)
        const target = strings((n.typeName as Node).names).at(-1) ?? ''
        if (v.k === 'const' && /^(bool|boolean)$/.test(target)) return { k: 'bool', v: this.asTruth(v, node) }
        // '' cast to uuid or a number raises an error: nothing to reason about, not a value.
        if (v.k === 'const' && v.v === '' && !/^(text|varchar|bpchar|name|char)$/.test(target))
          return opaque()
        return v
      }
      case 'ColumnRef': {
        // Inside an inlined function body a bare name is one of its parameters.
        const name = strings(n.fields).at(-1) ?? ''
        return this.bound.at(-1)?.get(name) ?? { k: 'col', name }
      }
      case 'ParamRef':
        return params[Number(n.number) - 1] ?? opaque()
      case 'BoolExpr':
        return { k: 'bool', v: this.bool(n, params, depth) }
      case 'NullTest': {
        const v = this.value(n.arg as Node, params, depth)
        if (v.k === 'error') return v
        const isNull = n.nulltesttype === 'IS_NULL'
        const known: Tri | undefined =
          v.k === 'null'
            ? 'T'
            : v.k === 'const'
              ? 'F'
              : v.k === 'bool'
                ? v.v === 'N'
                  ? 'T'
                  : 'F'
                : undefined
        const t = known ?? this.atom(`isnull:${v.k === 'col' ? v.name : stable(n.arg)}`)
        return { k: 'bool', v: isNull ? t : t === 'T' ? 'F' : 'T' }
      }
      case 'CoalesceExpr': {
        const args = (n.args as Node[]).map((a) => this.value(a, params, depth))
        for (const v of args) {
          if (v.k === 'null') continue
          if (v.k === 'opaque') return opaque()
          if (v.k === 'error') return v
          return v
        }
        return { k: 'null' }
      }
      case 'A_Expr':
        return this.operator(n, node, params, depth)
      case 'SubLink': {
        if (n.subLinkType !== 'EXPR_SUBLINK') return opaque()
        const inner = onlyTarget((n.subselect as Node).SelectStmt as Node | undefined)
        return inner === undefined ? opaque() : this.value(inner, params, depth)
      }
      case 'FuncCall':
        return this.call(n, node, params, depth)
      default:
        return opaque()
    }
  }

  private bool(n: Node, params: Val[], depth: number): Tri {
    const args = (n.args as Node[]).map((a) => this.truth(a, params, depth))
    if (n.boolop === 'NOT_EXPR') return args[0] === 'T' ? 'F' : args[0] === 'F' ? 'T' : 'N'
    if (n.boolop === 'AND_EXPR') return args.includes('F') ? 'F' : args.every((a) => a === 'T') ? 'T' : 'N'
    return args.includes('T') ? 'T' : args.every((a) => a === 'F') ? 'F' : 'N'
  }

  private operator(n: Node, node: Node, params: Val[], depth: number): Val {
    const op = strings(n.name).at(-1) ?? ''
    const left = this.value(n.lexpr as Node, params, depth)
    const right = this.value(n.rexpr as Node, params, depth)
    if (n.kind === 'AEXPR_NULLIF') {
      if (left.k === 'null' || left.k === 'error') return left
      const eq = compare('=', left, right)
      return eq === 'T' ? { k: 'null' } : eq === 'F' ? left : { k: 'opaque', key: stable(node) }
    }
    const negate = op === '<>' || op === '!='
    if (left.k === 'error' || right.k === 'error') return { k: 'error' }
    if (n.kind === 'AEXPR_DISTINCT' || n.kind === 'AEXPR_NOT_DISTINCT') {
      const distinct = n.kind === 'AEXPR_DISTINCT'
      if (left.k === 'null' || right.k === 'null') {
        const same = left.k === 'null' && right.k === 'null'
        return { k: 'bool', v: same !== distinct ? 'T' : 'F' }
      }
      const eq = compare('=', left, right)
      if (eq === undefined) return { k: 'bool', v: this.atom(stable(node)) }
      return { k: 'bool', v: (eq === 'T') !== distinct ? 'T' : 'F' }
    }
    if (n.kind !== 'AEXPR_OP' || !(op === '=' || negate)) return { k: 'opaque', key: stable(node) }
    const eq = compare('=', left, right)
    if (eq === undefined) return { k: 'bool', v: this.atom(stable(node)) }
    return { k: 'bool', v: !negate || eq === 'N' ? eq : eq === 'T' ? 'F' : 'T' }
  }

  private call(n: Node, node: Node, params: Val[], depth: number): Val {
    const name = strings(n.funcname)
    const args = (n.args as Node[] | undefined) ?? []
    const fn = name.at(-1) ?? ''
    const schema = name.length > 1 ? name[0] : undefined
    if (fn === 'current_setting' && (schema === undefined || schema === 'pg_catalog')) {
      const key = this.value(args[0] ?? {}, params, depth)
      if (key.k !== 'const' || key.v !== this.ctx.setting) return { k: 'opaque', key: stable(node) }
      const missingOk = args[1] !== undefined && this.truth(args[1], params, depth) === 'T'
      return this.settingValue(missingOk)
    }
    const candidates = (this.ctx.functions.get(fn) ?? []).filter(
      (f) => schema === undefined || f.schema === schema,
    )
    const f = candidates.length === 1 ? candidates[0] : undefined
    const needle = `'${this.ctx.setting}'`
    const unknown: Val = {
      k: 'opaque',
      key: stable(node),
      fromSetting: stable(node).includes(`"${this.ctx.setting}"`) || (f?.source.includes(needle) ?? false),
    }
    if (f === undefined || f.language !== 'sql' || depth >= MAX_DEPTH) return unknown
    const bodyExpr = sqlBodyExpression(f.source)
    if (bodyExpr === undefined) return unknown
    const values = args.map((a) => this.value(a, params, depth))
    // Named parameters appear as column references in the body: bind them by name too.
    const names = f.args
      .split(',')
      .map((a) => a.trim().split(/\s+/))
      .map((parts) => (parts.length > 1 && !/^(in|out|inout|variadic)$/i.test(parts[0]!) ? parts[0]! : ''))
    return this.withNames(names, values, () => this.value(bodyExpr, values, depth + 1))
  }

  private withNames(names: string[], values: Val[], fn: () => Val): Val {
    const map = new Map<string, Val>()
    names.forEach((name, i) => {
      if (name !== '' && values[i] !== undefined) map.set(name, values[i])
    })
    this.bound.push(map)
    try {
      return fn()
    } finally {
      this.bound.pop()
    }
  }
}

/** `=` between two values against a row of another tenant; undefined: not decidable here. */
function compare(_op: '=', a: Val, b: Val): Tri | undefined {
  if (a.k === 'null' || b.k === 'null' || a.k === 'error' || b.k === 'error') return 'N'
  if (a.k === 'const' && b.k === 'const') return a.v === b.v ? 'T' : 'F'
  if (a.k === 'bool' && b.k === 'bool') return a.v === 'N' || b.v === 'N' ? 'N' : a.v === b.v ? 'T' : 'F'
  if (a.k === 'col' && b.k === 'col') return a.name === b.name ? 'T' : undefined
  // A row value compared with the setting: the row belongs to another tenant, so it does not match.
  const rowVsSetting = (x: Val, y: Val) =>
    (x.k === 'col' || (x.k === 'opaque' && x.fromSetting !== true)) &&
    (y.k === 'const' || y.k === 'opaque') &&
    y.fromSetting === true
  if (rowVsSetting(a, b) || rowVsSetting(b, a)) return 'F'
  return undefined
}

/** The expression of a SQL function whose body is one `SELECT expr` (no FROM). */
export function sqlBodyExpression(source: string): Node | undefined {
  const body = source.trim().replace(/;\s*$/, '')
  return /^select\b/i.test(body) ? selectTarget(body) : undefined
}

/** Every assignment of the free atoms, or undefined when there are too many to try. */
function outcomes(tree: Node, ctx: ExpressionContext): Array<Record<World, Tri>> | undefined {
  const worlds: World[] = ['unset', 'empty', 'set']
  const evaluators = worlds.map((w) => new Evaluator(ctx, w))
  for (const e of evaluators) e.truth(tree)
  const keys = [...new Set(evaluators.flatMap((e) => [...e.atoms.keys()]))]
  if (keys.length > MAX_ATOMS) return undefined
  const out: Array<Record<World, Tri>> = []
  const values: Tri[] = ['T', 'F', 'N']
  for (let i = 0; i < 3 ** keys.length; i++) {
    const assignment = new Map(keys.map((k, j) => [k, values[Math.floor(i / 3 ** j) % 3]!] as const))
    const row = {} as Record<World, Tri>
    worlds.forEach((w, j) => {
      const e = evaluators[j]!
      e.assignment = assignment
      row[w] = e.truth(tree)
    })
    out.push(row)
  }
  return out
}

// A fleet repeats the same few policy texts thousands of times: each is parsed and evaluated once.
const memo = new WeakMap<ExpressionContext, Map<string, Array<Record<World, Tri>> | undefined>>()

function outcomesOf(text: string, ctx: ExpressionContext): Array<Record<World, Tri>> | undefined {
  let byText = memo.get(ctx)
  if (byText === undefined) {
    byText = new Map()
    memo.set(ctx, byText)
  }
  if (byText.has(text)) return byText.get(text)
  const tree = parseExpression(text)
  const all = tree === undefined ? undefined : outcomes(tree, ctx)
  byText.set(text, all)
  return all
}

/**
 * True when the expression admits a row of another tenant with the setting unset or empty, for a case
 * where it does not with the setting set: `COALESCE(setting, tenant_id)`, `setting IS NULL OR ...`,
 * `... OR setting = ''`. Undefined: the expression could not be analysed.
 */
export function failsOpen(text: string, ctx: ExpressionContext): boolean | undefined {
  return outcomesOf(text, ctx)?.some((o) => o.set !== 'T' && (o.unset === 'T' || o.empty === 'T'))
}

/**
 * True when, with the setting naming a tenant, the expression can admit a row of another tenant: an OR
 * branch that is not tied to the setting (`tenant_id = setting OR is_public`).
 */
export function admitsOtherTenants(text: string, ctx: ExpressionContext): boolean | undefined {
  return outcomesOf(text, ctx)?.some((o) => o.set === 'T')
}
