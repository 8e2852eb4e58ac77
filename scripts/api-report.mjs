#!/usr/bin/env node
// The public API of every package entry, as api-extractor reports it, checked in under <package>/api/.
// `pnpm run api:check` (CI) fails when a build's declarations differ from the checked-in report, so a
// change to the public surface is a visible diff in review; `pnpm run api:update` rewrites the reports.
// Reads the built declarations (dist/*.d.ts): build first. ADR 0029.
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Extractor, ExtractorConfig } from '@microsoft/api-extractor'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const update = process.argv.includes('--update')

/** One report per package.json export: [package folder, declaration entry, report name]. */
const entries = [
  ['packages/core', 'dist/index.d.ts', 'core'],
  ['packages/core', 'dist/http.d.ts', 'core-http'],
  ['packages/express-adapter', 'dist/index.d.ts', 'express'],
  ['packages/fastify-adapter', 'dist/index.d.ts', 'fastify'],
  ['packages/migrate', 'dist/index.d.ts', 'migrate'],
]

let failed = false
for (const [folder, entry, name] of entries) {
  const packageFolder = join(root, folder)
  const reportFolder = join(packageFolder, 'api')
  mkdirSync(reportFolder, { recursive: true })
  const config = ExtractorConfig.prepare({
    configObject: {
      projectFolder: packageFolder,
      mainEntryPointFilePath: join(packageFolder, entry),
      compiler: {
        overrideTsconfig: {
          compilerOptions: {
            target: 'ES2022',
            lib: ['ES2023'],
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            strict: true,
            types: ['node'],
          },
          // The entry alone: the folder also holds the .d.cts twin, and both at once collide.
          files: [join(packageFolder, entry)],
        },
      },
      apiReport: {
        enabled: true,
        reportFileName: `${name}.api.md`,
        reportFolder,
        reportTempFolder: join(root, '.keel/api-report', name),
      },
      docModel: { enabled: false },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      messages: {
        // keel's doc comments use @default, and no release tags: neither is what this report guards.
        tsdocMessageReporting: { default: { logLevel: 'none' } },
        // Findings about the surface (a type used but not exported) go into the report, where review sees them.
        extractorMessageReporting: {
          default: { logLevel: 'warning', addToApiReportFile: true },
          'ae-missing-release-tag': { logLevel: 'none' },
          'ae-undocumented': { logLevel: 'none' },
        },
        compilerMessageReporting: { default: { logLevel: 'warning' } },
      },
    },
    configObjectFullPath: join(packageFolder, 'api-extractor.json'),
    packageJsonFullPath: join(packageFolder, 'package.json'),
  })
  const result = Extractor.invoke(config, { localBuild: update, showVerboseMessages: false })
  if (!result.succeeded || (!update && result.apiReportChanged)) {
    failed = true
    const pkg = JSON.parse(readFileSync(join(packageFolder, 'package.json'), 'utf8')).name
    console.error(
      `api report ${folder}/api/${name}.api.md: ${result.apiReportChanged ? `the public API of ${pkg} changed; run pnpm run api:update and commit the report` : 'api-extractor failed'}`,
    )
  }
}
process.exit(failed ? 1 : 0)
