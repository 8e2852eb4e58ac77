import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  addDelayedJob,
  addPrioritizedJob,
  BULLMQ_PACKR_OPTIONS,
  Packr,
  QueueKeys,
} from '../src/jobs/bullmq-internals.js'
import { DELAYED_KEYS, PRIORITIZED_KEYS } from '../src/jobs/enqueue-script.js'
import { satisfies } from './support/version-range.js'

// The guard of src/jobs/bullmq-internals.ts (ADR 0028): every piece of BullMQ keel uses beyond Queue,
// Worker and Job, checked against the installed BullMQ. A release that moves one fails here by name.
// jobs-enqueue-script.test.ts checks the script text around keel's splice and runs it.
const require = createRequire(import.meta.url)
const core = require('../package.json') as {
  peerDependencies: Record<string, string>
  dependencies: Record<string, string>
}
const bullmqDir = dirname(require.resolve('bullmq/package.json'))
const installed = (require('bullmq/package.json') as { version: string }).version

/** The positional arguments of a script's packed ARGV[1], from its header (`[n] what`). */
function headerArgs(content: string): string[] {
  const start = content.indexOf('\n', content.indexOf('ARGV[1]'))
  const header = content.slice(start, content.indexOf('ARGV[2]'))
  return [...header.matchAll(/\[(\d+)\]\s+([^\n,]+)/g)].map((m) => `${m[1]} ${m[2]!.trim()}`)
}

describe("BullMQ's internals keel relies on", () => {
  it(`the installed BullMQ (${installed}) is in keel's peer range`, () => {
    expect(satisfies(installed, core.peerDependencies.bullmq!)).toBe(true)
  })

  it('ships the two add scripts keel splices, with the key counts keel passes', () => {
    expect(addPrioritizedJob?.name).toBe('addPrioritizedJob')
    expect(addDelayedJob?.name).toBe('addDelayedJob')
    expect(addPrioritizedJob.keys).toBe(PRIORITIZED_KEYS.length)
    expect(addDelayedJob.keys).toBe(DELAYED_KEYS.length)
  })

  it('the packed arguments keel sends are the ones the scripts read, in that order', () => {
    for (const script of [addPrioritizedJob, addDelayedJob]) {
      // keel packs [prefix, jobId, name, timestamp, then nils] (FairScheduler.add).
      const args = headerArgs(script.content).map((a) => a.split(' (', 1)[0])
      expect(args.slice(0, 4), script.name).toEqual(['1 key prefix', '2 custom id', '3 name', '4 timestamp'])
      // Up to ten arguments: keel sends nils for 5..10; an eleventh would be one keel does not know.
      expect(args.length, script.name).toBeLessThanOrEqual(10)
      expect(script.content).toMatch(/ARGV\[2\] Json stringified job data/)
      expect(script.content).toMatch(/ARGV\[3\] msgpacked options/)
    }
  })

  it("names every key of a queue keel hands the scripts (BullMQ's key layout)", () => {
    const keys = new QueueKeys('bull').getKeys('q') as Record<string, string>
    // The '' key is the queue's own prefix, which keel passes as the scripts' first argument.
    expect(keys['']).toBe('bull:q:')
    for (const name of new Set([...PRIORITIZED_KEYS, ...DELAYED_KEYS])) {
      expect(keys[name], `key ${name}`).toBe(`bull:q:${name}`)
    }
  })

  it("packs arguments with BullMQ's own msgpackr options and a msgpackr of the same major", () => {
    const sources = readdirSync(join(bullmqDir, 'dist/cjs/classes'))
      .filter((f) => f.endsWith('.js'))
      .map((f) => readFileSync(join(bullmqDir, 'dist/cjs/classes', f), 'utf8'))
      .flatMap((text) => [...text.matchAll(/new msgpackr_1\.Packr\(\{([^}]*)\}\)/g)].map((m) => m[1]!))
    expect(sources).toHaveLength(1)
    const options = Object.fromEntries(
      sources[0]!
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map((s) => s.split(':').map((p) => p.trim())),
    )
    expect(options).toEqual(
      Object.fromEntries(Object.entries(BULLMQ_PACKR_OPTIONS).map(([k, v]) => [k, String(v)])),
    )
    // BullMQ's own msgpackr (msgpackr exports no package.json: found from its entry point).
    const fromBullmq = createRequire(join(bullmqDir, 'package.json'))
    let dir = dirname(fromBullmq.resolve('msgpackr'))
    while (!readdirSync(dir).includes('package.json')) dir = dirname(dir)
    const theirs = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }
    expect(satisfies(theirs.version, core.dependencies.msgpackr!)).toBe(true)
    // The same bytes through keel's Packr and BullMQ's.
    const value = { a: undefined, b: [1], c: 'x' }
    const TheirPackr = (fromBullmq('msgpackr') as { Packr: typeof Packr }).Packr
    expect(new Packr(BULLMQ_PACKR_OPTIONS).pack(value)).toEqual(
      new TheirPackr(BULLMQ_PACKR_OPTIONS).pack(value),
    )
  })
})
