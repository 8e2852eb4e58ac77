// After tsup, in an adapter package: ships a hand-written declaration file (the adapter's augmentation
// of its framework's types) as dist/<file> and makes both declaration entries, index.d.ts and
// index.d.cts, reference it, so ESM and CommonJS callers in one project see one augmentation instead of
// two that disagree (TS2717, ADR 0028). tsup's declaration bundler drops `/// <reference path>`
// directives, hence this step. Usage (from the package): node ../../scripts/link-declarations.mjs <file>.d.ts
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'

const file = process.argv[2]
if (file === undefined || !file.endsWith('.d.ts')) throw new Error('usage: link-declarations.mjs <file>.d.ts')
const reference = `/// <reference path="./${file}" />\n`
copyFileSync(`src/${file}`, `dist/${file}`)
for (const entry of ['dist/index.d.ts', 'dist/index.d.cts']) {
  const text = readFileSync(entry, 'utf8')
  if (/declare (global|module)/.test(text)) throw new Error(`${entry} declares an augmentation itself`)
  if (!text.startsWith(reference)) writeFileSync(entry, reference + text)
}
