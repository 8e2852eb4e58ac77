#!/usr/bin/env node
// keel as a user gets it (ADR 0028): packs the published packages with `pnpm pack`, checks the tarballs
// (no `workspace:` range left, README and LICENSE inside, attw and publint clean), then installs them
// with npm from the registry into fresh Express and Fastify apps, once with the lowest and once with the
// highest supported pg/ioredis/bullmq (the peer ranges of @keel/core), and in each app checks:
//   - `npm ls` finds one copy of pg, ioredis and bullmq, at the version asked for;
//   - `tsc` (strict, module nodenext, no skipLibCheck, no @types/pg or @types/express in the app)
//     compiles the README's snippets from an ESM file and a .cts file in the same project;
//   - the compiled app runs a scoped query, a cached read and a job through a real worker on the stack.
// Needs the packages built and the local stack up (.keel/stack.json). npm's cache lives in the work
// directory (.keel/consumer-check), so the four installs share downloads.
// Usage: node scripts/consumer-check.mjs [--only lowest|highest] [--keep]
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const work = join(root, '.keel', 'consumer-check')
const npmCache = join(work, 'npm-cache')
const args = process.argv.slice(2)
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined
const PACKAGES = ['core', 'express-adapter', 'fastify-adapter', 'migrate']
// The checkers, pinned: a new release of either must not turn CI red on its own.
const TOOLS = { '@arethetypeswrong/cli': '0.18.5', publint: '0.3.25', typescript: '5.9.3' }

const started = Date.now()
const failures = []
const log = (line) => console.log(`[consumer-check ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`)
const fail = (line) => {
  failures.push(line)
  console.error(`  ✗ ${line}`)
}
let lastStep = Date.now()
const ok = (line) => {
  console.log(`  ✓ ${line} (${((Date.now() - lastStep) / 1000).toFixed(1)}s)`)
  lastStep = Date.now()
}

function run(cmd, cmdArgs, cwd, { allowFail = false, env = {}, timeoutMs = 600_000 } = {}) {
  const result = spawnSync(cmd, cmdArgs, {
    cwd,
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    encoding: 'utf8',
    env: {
      ...process.env,
      npm_config_cache: npmCache,
      npm_config_fund: 'false',
      npm_config_audit: 'false',
      ...env,
    },
    maxBuffer: 64 * 1024 * 1024,
  })
  if (result.status !== 0 && !allowFail) {
    throw new Error(`${cmd} ${cmdArgs.join(' ')} (in ${cwd}) failed:\n${result.stdout}\n${result.stderr}`)
  }
  return result
}

const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'))

// ---------------------------------------------------------------------------------------------- pack
if (!existsSync(join(root, '.keel', 'stack.json')))
  throw new Error('the local stack is not up: node scripts/stack.mjs up')
for (const pkg of PACKAGES) {
  if (!existsSync(join(root, 'packages', pkg, 'dist'))) throw new Error(`packages/${pkg} is not built`)
}
rmSync(join(work, 'tarballs'), { recursive: true, force: true })
rmSync(join(work, 'apps'), { recursive: true, force: true })
mkdirSync(join(work, 'tarballs'), { recursive: true })

log('pnpm pack')
const tarballs = {}
for (const pkg of PACKAGES) {
  const dir = join(root, 'packages', pkg)
  const name = readJson(join(dir, 'package.json')).name
  run('pnpm', ['pack', '--pack-destination', join(work, 'tarballs')], dir)
  const file = readdirSync(join(work, 'tarballs')).find(
    (f) => f.startsWith(name.replace('@', '').replace('/', '-')) && f.endsWith('.tgz'),
  )
  tarballs[name] = join(work, 'tarballs', file)
  const listing = execFileSync('tar', ['-tzf', tarballs[name]], { encoding: 'utf8' }).split('\n')
  for (const required of ['package/README.md', 'package/LICENSE', 'package/package.json']) {
    if (listing.includes(required)) ok(`${name}: ${required.slice(8)} in the tarball`)
    else fail(`${name}: ${required.slice(8)} missing from the tarball`)
  }
  const packed = JSON.parse(
    execFileSync('tar', ['-xzOf', tarballs[name], 'package/package.json'], { encoding: 'utf8' }),
  )
  const ranges = ['dependencies', 'peerDependencies', 'optionalDependencies'].flatMap((field) =>
    Object.entries(packed[field] ?? {}).map(([dep, range]) => `${field}.${dep}: ${range}`),
  )
  const workspace = ranges.filter((r) => r.includes('workspace:'))
  if (workspace.length > 0) fail(`${name}: packed package.json keeps ${workspace.join(', ')}`)
  else ok(`${name}: packed ranges are real (${ranges.join('; ')})`)
}

// -------------------------------------------------------------------------------------- attw, publint
log('attw and publint')
const tools = join(work, 'tools')
mkdirSync(tools, { recursive: true })
const toolSpecs = Object.entries(TOOLS).map(([n, v]) => `${n}@${v}`)
const installedTools = existsSync(join(tools, 'package.json'))
  ? (readJson(join(tools, 'package.json')).dependencies ?? {})
  : {}
if (Object.entries(TOOLS).some(([n, v]) => installedTools[n] !== v)) {
  writeFileSync(join(tools, 'package.json'), '{"private":true}\n')
  run('npm', ['install', '--save-exact', '--prefer-offline', '--no-package-lock', ...toolSpecs], tools)
}
const bin = (name) => join(tools, 'node_modules', '.bin', name)
for (const [name, tarball] of Object.entries(tarballs)) {
  const attw = run(bin('attw'), [tarball, '--format', 'ascii', '--profile', 'node16'], work, {
    allowFail: true,
  })
  if (attw.status === 0) ok(`${name}: attw clean`)
  else fail(`${name}: attw\n${attw.stdout}${attw.stderr}`)
  const unpacked = join(work, 'unpacked', name)
  rmSync(unpacked, { recursive: true, force: true })
  mkdirSync(unpacked, { recursive: true })
  execFileSync('tar', ['-xzf', tarball, '-C', unpacked])
  const publint = run(
    bin('publint'),
    ['run', join(unpacked, 'package'), '--pack', 'false', '--level', 'suggestion'],
    work,
    {
      allowFail: true,
    },
  )
  const out = `${publint.stdout}${publint.stderr}`.trim()
  if (publint.status === 0 && /All good|No issues/i.test(out)) ok(`${name}: publint clean`)
  else fail(`${name}: publint\n${out}`)
}

// The README's snippets: createKeel with cache and jobs, defineJob with a zod schema, a worker.
const KEEL_TS = `import { createKeel, isKeelError, type Keel } from '@keel/core'
import { z } from 'zod'

export const warnings: string[] = []
const logger = {
  debug() {},
  info() {},
  warn(_obj: unknown, msg?: string) { warnings.push(String(msg)) },
  error(_obj: unknown, msg?: string) { warnings.push(String(msg)) },
}

export function makeKeel(): Keel {
  const keel = createKeel({
    postgres: { primary: { connectionString: process.env.DATABASE_URL }, pool: { max: 4 } },
    tenancy: { mode: 'rls', setting: 'app.tenant_id' },
    cache: { redis: { url: process.env.REDIS_URL! }, ttlMs: 60_000 },
    jobs: { redis: { url: process.env.REDIS_URL! } },
    logger,
  })
  keel.defineJob('consumer.echo', {
    schema: z.object({ n: z.number() }),
    handler: async ({ n }, { db }) => {
      const { rows } = await db.query<{ tenant: string }>("SELECT current_setting('app.tenant_id', true) AS tenant")
      return { n, tenant: rows[0]!.tenant }
    },
  })
  return keel
}

export { isKeelError }
`

const ROUTE_BODY = `
  const { rows } = await db.query<{ tenant: string }>("SELECT current_setting('app.tenant_id', true) AS tenant")
  const cached = await db.cached({ key: 'consumer', ttlMs: 1_000 }, async () => ({ at: 1 }))
  const { jobId } = await db.enqueue('consumer.echo', { n: 7 })
  let status = await db.jobStatus(jobId)
  for (let i = 0; i < 200 && status?.state !== 'completed'; i++) {
    await new Promise((r) => setTimeout(r, 50))
    status = await db.jobStatus(jobId)
  }
  return { tenant: rows[0]!.tenant, cached: cached.at, job: status?.state, result: status?.result }
`

// #12: keel and the app share one pg (a peer), so the facade is an instanceof the app's pg.Pool (what
// Prisma's adapter checks) and the app's global type parsers apply to keel's queries.
const PG_CHECK = `
async function checkPgPool(): Promise<void> {
  const pool = keel.tenant('acme').pgPool()
  if (!(pool instanceof pg.Pool)) throw new Error("db.pgPool() is not an instance of the app's pg.Pool")
  pg.types.setTypeParser(20, (v: string) => BigInt(v))
  try {
    const { rows } = await pool.query<{ n: bigint; tenant: string }>("SELECT 9007199254740993::int8 AS n, current_setting('app.tenant_id', true) AS tenant")
    if (rows[0]!.n !== 9007199254740993n || rows[0]!.tenant !== 'acme') throw new Error('pgPool query: ' + String(rows[0]!.n))
  } finally {
    pg.types.setTypeParser(20, (v: string) => v)
  }
}
`

const CHECK = `
function check(label: string, body: unknown): void {
  const expected = { tenant: 'acme', cached: 1, job: 'completed', result: { n: 7, tenant: 'acme' } }
  if (JSON.stringify(body) !== JSON.stringify(expected)) throw new Error(label + ': ' + JSON.stringify(body))
  const fellBack = warnings.filter((w) => /not the ones keel knows/.test(w))
  if (fellBack.length > 0) throw new Error('BullMQ scripts not recognised: ' + fellBack.join('; '))
}
`

const EXPRESS_APP = `import type { AddressInfo } from 'node:net'
import { closeKeelWithServer, keelExpress } from '@keel/express'
import express from 'express'
import pg from 'pg'
import { makeKeel, warnings } from './keel.js'
import { cjsErrorHandler, legacyRoutes } from './legacy.cjs'

const keel = makeKeel()
const worker = keel.startWorker({ concurrency: 2 })
const app = express()
app.use(express.json())
app.use(keelExpress(keel, { tenant: 'header', health: true }))   // req.db, req.keel; /healthz, /readyz
app.get('/esm', async (req, res) => {
  const db = req.db
  res.json(await (async () => {${ROUTE_BODY}})())
})
legacyRoutes(app)
app.use(cjsErrorHandler())                                        // the CommonJS build's, same errors
const server = app.listen(0, '127.0.0.1')
await new Promise((r) => server.once('listening', r))
const closed = closeKeelWithServer(server, keel)
${CHECK}${PG_CHECK}
try {
  await checkPgPool()
  const base = 'http://127.0.0.1:' + (server.address() as AddressInfo).port
  for (const path of ['/esm', '/cts']) {
    const res = await fetch(base + path, { headers: { 'x-tenant-id': 'acme' } })
    check(path, await res.json())
  }
  console.log('consumer app ok: express, ESM and .cts routes: scoped query, cache, job; pgPool() instanceof the app pg.Pool')
} finally {
  await worker.close()
  server.close()
  server.closeAllConnections()
  await closed
}
`

const EXPRESS_CTS = `import { keelErrorHandler } from '@keel/express'
import type { Express } from 'express'

// A CommonJS file in the same project, loading @keel/express's CommonJS build and declarations
// (index.d.cts): both see one Request augmentation (no TS2717).
export const cjsErrorHandler = keelErrorHandler
export function legacyRoutes(app: Express): void {
  app.get('/cts', async (req, res) => {
    const db = req.db
    res.json(await (async () => {${ROUTE_BODY}})())
  })
}
`

const FASTIFY_APP = `import { keelFastify } from '@keel/fastify'
import Fastify from 'fastify'
import pg from 'pg'
import { makeKeel, warnings } from './keel.js'
import { legacyRoutes } from './legacy.cjs'

const keel = makeKeel()
const worker = keel.startWorker({ concurrency: 2 })
const app = Fastify()
await app.register(keelFastify, { keel, tenant: 'header', health: true })   // request.db; closes keel on app.close()
app.get('/esm', async (request) => {
  const db = request.db
${ROUTE_BODY}})
await app.register(legacyRoutes)
${CHECK}${PG_CHECK}
try {
  await checkPgPool()
  for (const url of ['/esm', '/cts']) {
    const res = await app.inject({ url, headers: { 'x-tenant-id': 'acme' } })
    check(url, res.json())
  }
  console.log('consumer app ok: fastify, ESM and .cts routes: scoped query, cache, job; pgPool() instanceof the app pg.Pool')
} finally {
  await worker.close()
  await app.close()
}
`

const FASTIFY_CTS = `import type { KeelFastifyOptions } from '@keel/fastify'
import type { FastifyInstance } from 'fastify'

// A CommonJS file in the same project, with @keel/fastify's CommonJS declarations (index.d.cts).
export type Options = KeelFastifyOptions
export async function legacyRoutes(app: FastifyInstance): Promise<void> {
  app.get('/cts', async (request) => {
    const db = request.db
${ROUTE_BODY}})
}
`

// ------------------------------------------------------------------------------------ version matrix
const core = readJson(join(root, 'packages/core/package.json'))
const lowestOf = (range) => /(\d+\.\d+\.\d+)/.exec(range)[1]
function highestOf(name, range) {
  const found = JSON.parse(run('npm', ['view', `${name}@${range}`, 'version', '--json'], work).stdout)
  // npm lists them in publication order, not version order.
  const key = (v) =>
    v
      .split('.')
      .map((n) => n.padStart(6, '0'))
      .join('.')
  return (Array.isArray(found) ? found : [found])
    .filter((v) => !v.includes('-'))
    .sort((a, b) => (key(a) < key(b) ? -1 : 1))
    .at(-1)
}
const PEERS = ['pg', 'ioredis', 'bullmq']
const matrix = {
  lowest: Object.fromEntries(PEERS.map((p) => [p, lowestOf(core.peerDependencies[p])])),
  highest: Object.fromEntries(PEERS.map((p) => [p, highestOf(p, core.peerDependencies[p])])),
}
const stack = readJson(join(root, '.keel', 'stack.json'))

for (const [label, versions] of Object.entries(matrix)) {
  if (only !== undefined && only !== label) continue
  for (const framework of ['express', 'fastify']) {
    const app = join(work, 'apps', `${framework}-${label}`)
    log(`${framework} app, ${label} peers (${PEERS.map((p) => `${p}@${versions[p]}`).join(', ')})`)
    lastStep = Date.now()
    writeApp(app, framework, versions)
    const install = run('npm', ['install', '--prefer-offline', '--no-package-lock'], app)
    const scriptWarnings = `${install.stdout}${install.stderr}`
      .split('\n')
      .filter((l) => /warn/i.test(l) && /script/i.test(l))
    if (scriptWarnings.length > 0) fail(`npm warns about install scripts: ${scriptWarnings.join(' | ')}`)
    else ok('npm install: no install-script warning (msgpackr-extract denied in allowScripts)')
    checkOneCopy(app, versions)
    const tsc = run(join(app, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json'], app, {
      allowFail: true,
    })
    if (tsc.status === 0)
      ok('tsc: strict, nodenext, no skipLibCheck, ESM + .cts, no @types/pg or @types/express in the app')
    else fail(`${framework}-${label}: tsc\n${tsc.stdout}${tsc.stderr}`)
    if (tsc.status === 0) {
      const env = {
        DATABASE_URL: stack.primary.url,
        OWNER_URL: stack.primary.ownerUrl,
        REDIS_URL: stack.redis.url,
      }
      const started = run('node', ['dist/app.js'], app, { allowFail: true, env, timeoutMs: 90_000 })
      const out = `${started.stdout}${started.stderr}`.trim()
      if (started.status === 0 && out.includes('consumer app ok'))
        ok(`runs against the stack: ${out.split('\n').at(-1)}`)
      else
        fail(
          `${framework}-${label}: the app failed${started.error ? ` (${started.error.message})` : ''}\n${out}`,
        )
    }
  }
}

function checkOneCopy(app, versions) {
  const nodes = JSON.parse(run('npm', ['query', PEERS.map((p) => `#${p}`).join(', ')], app).stdout)
  for (const peer of PEERS) {
    const copies = nodes.filter((n) => n.name === peer)
    const where = copies.map((n) => `${n.location}@${n.version}`).join(', ')
    if (copies.length === 1 && copies[0].version === versions[peer]) ok(`one ${peer} (${where})`)
    else fail(`${app}: ${copies.length} copies of ${peer}, wanted one at ${versions[peer]}: ${where}`)
  }
  const ls = run('npm', ['ls', ...PEERS], app, { allowFail: true })
  if (ls.status !== 0) fail(`${app}: npm ls ${PEERS.join(' ')}\n${ls.stdout}${ls.stderr}`)
}

// ---------------------------------------------------------------------------------------- the apps
function writeApp(app, framework, versions) {
  mkdirSync(join(app, 'src'), { recursive: true })
  const adapter = framework === 'express' ? '@keel/express' : '@keel/fastify'
  const dependencies = {
    '@keel/core': `file:${tarballs['@keel/core']}`,
    [adapter]: `file:${tarballs[adapter]}`,
    pg: versions.pg,
    ioredis: versions.ioredis,
    bullmq: versions.bullmq,
    zod: '^4.6.7',
    ...(framework === 'express' ? { express: '^5.0.0' } : { fastify: '^5.0.0' }),
  }
  writeFileSync(
    join(app, 'package.json'),
    `${JSON.stringify(
      {
        name: `keel-consumer-${framework}`,
        private: true,
        type: 'module',
        dependencies,
        devDependencies: { typescript: TOOLS.typescript, '@types/node': '^20.19.0' },
        // npm 11 blocks dependencies' install scripts and warns about each one not listed here.
        // msgpackr-extract (through msgpackr, keel's and BullMQ's) ships prebuilt binaries; its script
        // only rebuilds from source. What `npm install-scripts deny msgpackr-extract` writes (ADR 0028).
        allowScripts: { 'msgpackr-extract': false },
      },
      null,
      2,
    )}\n`,
  )
  writeFileSync(
    join(app, 'tsconfig.json'),
    `${JSON.stringify(
      {
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          outDir: 'dist',
          rootDir: 'src',
          types: ['node'],
        },
        include: ['src'],
      },
      null,
      2,
    )}\n`,
  )
  writeFileSync(join(app, 'src', 'keel.ts'), KEEL_TS)
  if (framework === 'express') {
    writeFileSync(join(app, 'src', 'app.ts'), EXPRESS_APP)
    writeFileSync(join(app, 'src', 'legacy.cts'), EXPRESS_CTS)
  } else {
    writeFileSync(join(app, 'src', 'app.ts'), FASTIFY_APP)
    writeFileSync(join(app, 'src', 'legacy.cts'), FASTIFY_CTS)
  }
}

// -------------------------------------------------------------------------------------------- end
log(failures.length === 0 ? 'all checks passed' : `${failures.length} check(s) failed`)
if (!args.includes('--keep')) rmSync(join(work, 'apps'), { recursive: true, force: true })
process.exit(failures.length === 0 ? 0 : 1)
