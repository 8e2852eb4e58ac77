import { basename } from 'node:path'

/**
 * Reading a `node --cpu-prof` profile: self and inclusive time per function over a window of it, and
 * self time per package (keel, bullmq, ioredis, zod, node's own code, GC). Shared by
 * bench/src/cache-profile.ts and bench/src/jobs-profile.ts.
 */

export interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

export interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  samples: number[]
  timeDeltas: number[]
}

/** Which package a frame's code belongs to: `keel`, an npm package name, `node`, or V8's pseudo-frames. */
export function packageOf(node: ProfileNode): string {
  const { url, functionName } = node.callFrame
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.includes('/packages/core/dist/')) return 'keel'
  const m = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (m) return m[1]!
  if (url.startsWith('node:')) return 'node (built-ins)'
  if (url.includes('/bench/dist/')) return 'bench loop'
  return basename(url)
}

export function frameName(node: ProfileNode): string {
  const f = node.callFrame
  const name = f.functionName === '' ? '(anonymous)' : f.functionName
  if (f.url === '') return name
  let where = basename(f.url.replace(/^file:\/\//, ''))
  if (f.url.includes('/packages/core/dist/')) where = `keel ${where}`
  else {
    const m = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(f.url)
    if (m) where = `${m[1]!} ${basename(f.url)}`
    else if (f.url.startsWith('node:')) where = f.url
  }
  return `${name} (${where}:${f.lineNumber + 1})`
}

export interface FunctionRow {
  name: string
  selfUs: number
  totalUs: number
}

export interface ProfileSummary {
  rows: FunctionRow[]
  /** Self time per package (see packageOf). */
  packages: Map<string, number>
  sampledUs: number
  idleUs: number
}

/**
 * Self and inclusive time per function over the samples taken in [fromUs, toUs] (V8's profile clock
 * and process.hrtime share CLOCK_MONOTONIC, in µs).
 */
export function analyzeProfile(profile: CpuProfile, fromUs: number, toUs: number): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  const packages = new Map<string, number>()
  let sampledUs = 0
  let idleUs = 0
  let at = profile.startTime
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i] ?? 0
    const dt = profile.timeDeltas[i + 1] ?? 0 // the time until the next sample belongs to this one
    if (at < fromUs || at > toUs) return
    const node = byId.get(id)!
    sampledUs += dt
    const leaf = frameName(node)
    if (node.callFrame.functionName === '(idle)') idleUs += dt
    self.set(leaf, (self.get(leaf) ?? 0) + dt)
    const pkg = packageOf(node)
    packages.set(pkg, (packages.get(pkg) ?? 0) + dt)
    const seen = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const name = frameName(byId.get(cur)!)
      if (seen.has(name)) continue // recursion counts once
      seen.add(name)
      total.set(name, (total.get(name) ?? 0) + dt)
    }
  })
  const rows = [...total.keys()].map((name) => ({
    name,
    selfUs: self.get(name) ?? 0,
    totalUs: total.get(name) ?? 0,
  }))
  return { rows, packages, sampledUs, idleUs }
}
