import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { replaceBetweenMarkers } from './report.js'
import { repoRoot } from './stack.js'

/** Where results go: bench/results, unless BENCH_RESULTS_DIR points elsewhere (then the README is left alone). */
export function resultsDir(): string {
  return process.env.BENCH_RESULTS_DIR ?? join(repoRoot, 'bench/results')
}

/** The last run's results, so a run of one scenario keeps the others' (the file holds the latest of each). */
export function previousResults<T>(name: string): Partial<T> {
  try {
    return JSON.parse(readFileSync(join(resultsDir(), `${name}.json`), 'utf8')) as Partial<T>
  } catch {
    return {}
  }
}

/**
 * Writes `<name>.json` and `<name>.md` and refreshes bench/README.md between `<!-- <marker>:start -->`
 * and `<!-- <marker>:end -->`. Returns the files written.
 */
export function writeResults(
  name: string,
  title: string,
  results: unknown,
  markdown: string,
  marker = name,
): string[] {
  const dir = resultsDir()
  mkdirSync(dir, { recursive: true })
  const json = join(dir, `${name}.json`)
  const md = join(dir, `${name}.md`)
  writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`)
  writeFileSync(md, `## ${title}\n\n${markdown}`)
  const written = [json, md]
  if (process.env.BENCH_RESULTS_DIR === undefined) {
    const readme = join(repoRoot, 'bench/README.md')
    if (replaceBetweenMarkers(readme, `<!-- ${marker}:start -->`, `<!-- ${marker}:end -->`, markdown))
      written.push(readme)
  }
  return written
}
