/**
 * Whether a version satisfies a package.json range of the forms keel uses (`^1.2.3`, `>=1.2.3 <1.8.0`,
 * alternatives joined by `||`). Enough for the guard tests; semver is not a dependency of core.
 */
export function satisfies(version: string, range: string): boolean {
  const v = parse(version)
  return range.split('||').some((alternative) =>
    alternative
      .trim()
      .split(/\s+/)
      .every((comparator) => {
        const m = /^(\^|>=|<=|>|<|=)?(\d+\.\d+\.\d+)$/.exec(comparator)
        if (m === null) throw new Error(`unsupported range ${JSON.stringify(range)}`)
        const bound = parse(m[2]!)
        const c = compare(v, bound)
        switch (m[1]) {
          case '^':
            return c >= 0 && v[0] === bound[0] && (bound[0] !== 0 || v[1] === bound[1])
          case '>=':
            return c >= 0
          case '>':
            return c > 0
          case '<=':
            return c <= 0
          case '<':
            return c < 0
          default:
            return c === 0
        }
      }),
  )
}

function parse(version: string): [number, number, number] {
  const [a, b, c] = version.split('-', 1)[0]!.split('.').map(Number)
  return [a!, b!, c!]
}

function compare(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return 0
}
