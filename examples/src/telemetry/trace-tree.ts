import type { ReceivedSpan } from './otlp-receiver.js'

const KIND = ['', 'internal', 'server', 'client', 'producer', 'consumer']
/** The attributes worth a glance in a terminal; the rest stay in the backend. */
const SHOWN = [
  'http.response.status_code',
  'keel.route',
  'keel.replica.name',
  'keel.cache.result',
  'keel.job.attempt',
  'messaging.message.id',
  'db.query.text',
] as const

/** Renders one trace as an indented tree, children in start order, with each span's duration. */
export function renderTraceTree(spans: readonly ReceivedSpan[]): string {
  const ids = new Set(spans.map((s) => s.spanId))
  const children = new Map<string | undefined, ReceivedSpan[]>()
  for (const s of spans) {
    // A parent that never arrived (or lives in another trace) makes its child a root.
    const parent = s.parentSpanId !== undefined && ids.has(s.parentSpanId) ? s.parentSpanId : undefined
    const list = children.get(parent) ?? []
    list.push(s)
    children.set(parent, list)
  }
  for (const list of children.values()) list.sort((a, b) => (a.startNs < b.startNs ? -1 : 1))
  const lines: string[] = []
  let lastService: string | undefined
  const walk = (span: ReceivedSpan, prefix: string, isLast: boolean, isRoot: boolean) => {
    const branch = isRoot ? '' : isLast ? '└─ ' : '├─ '
    const ms = Number(span.endNs - span.startNs) / 1e6
    const where = span.service !== lastService ? ` ⟨${span.service}⟩` : ''
    lastService = span.service
    const attrs = SHOWN.filter((k) => span.attributes[k] !== undefined)
      .map((k) => `${k.replace(/^(keel|http|messaging|db)\./, '')}=${short(span.attributes[k])}`)
      .join(' ')
    const error = span.statusCode === 2 ? ' ✗' : ''
    lines.push(
      `${prefix}${branch}${span.name} [${KIND[span.kind] ?? span.kind}]${where} ${ms.toFixed(1)} ms${error}${attrs ? `  ${attrs}` : ''}`,
    )
    const kids = children.get(span.spanId) ?? []
    const next = isRoot ? prefix : `${prefix}${isLast ? '   ' : '│  '}`
    kids.forEach((kid, i) => {
      walk(kid, next, i === kids.length - 1, false)
    })
  }
  const roots = children.get(undefined) ?? []
  roots.forEach((root, i) => {
    walk(root, '', i === roots.length - 1, true)
  })
  return lines.join('\n')
}

function short(v: unknown): string {
  const s = String(v).replace(/\s+/g, ' ')
  return s.length > 48 ? `"${s.slice(0, 45)}..."` : s.includes(' ') ? `"${s}"` : s
}
