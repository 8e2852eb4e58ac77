// After tsup: ships src/express-request.d.ts as dist/express-request.d.ts and makes both declaration
// entries reference it, so ESM and CommonJS callers share one Request augmentation (ADR 0028). tsup's
// declaration bundler drops `/// <reference path>` directives, hence this step.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'

const REFERENCE = '/// <reference path="./express-request.d.ts" />\n'
copyFileSync('src/express-request.d.ts', 'dist/express-request.d.ts')
for (const entry of ['dist/index.d.ts', 'dist/index.d.cts']) {
  const text = readFileSync(entry, 'utf8')
  if (text.includes('declare global')) throw new Error(`${entry} declares the Request augmentation itself`)
  if (!text.startsWith(REFERENCE)) writeFileSync(entry, REFERENCE + text)
}
