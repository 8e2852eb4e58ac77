// PgBouncer >= 1.21 for the stack (issue #17): the first release that keeps protocol-level prepared
// statements across server connections in transaction mode (`max_prepared_statements`). Debian 12 ships
// 1.18 only, so the stack builds Debian's own source of 1.24.1 (trixie's pgbouncer, from deb.debian.org,
// checked against the archive's SHA-256) once per machine, without PAM, c-ares or systemd. The binary
// lands outside the repository (KEEL_TOOLS_DIR, default /tmp/keel-tools), so clean clones reuse it.
// KEEL_PGBOUNCER_PREPARED_BIN points at another >= 1.21 binary instead.

import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

export const PREPARED_PGBOUNCER_VERSION = '1.24.1'
const TARBALL = `pgbouncer_${PREPARED_PGBOUNCER_VERSION}.orig.tar.gz`
const SOURCE_URL = `http://deb.debian.org/debian/pool/main/p/pgbouncer/${TARBALL}`
// From trixie's Sources index (pgbouncer 1.24.1-1+deb13u2).
const SOURCE_SHA256 = 'da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0'
const BUILD_PACKAGES = ['build-essential', 'pkg-config', 'libevent-dev', 'libssl-dev']

/**
 * The path of a PgBouncer >= 1.21 binary, built here when missing.
 * @param {{ log: (s: string) => void, installWithApt: (pkgs: string[]) => void, isRoot: boolean }} io
 * @returns {Promise<string>}
 */
export async function ensurePreparedPgBouncer({ log, installWithApt, isRoot }) {
  const given = process.env.KEEL_PGBOUNCER_PREPARED_BIN
  if (given) return given
  const prefix = path.join(
    process.env.KEEL_TOOLS_DIR || '/tmp/keel-tools',
    `pgbouncer-${PREPARED_PGBOUNCER_VERSION}`,
  )
  const bin = path.join(prefix, 'bin', 'pgbouncer')
  if (fs.existsSync(bin)) return bin
  log(`building PgBouncer ${PREPARED_PGBOUNCER_VERSION} (Debian's source) into ${prefix}; once per machine`)
  if (isRoot && !hasHeaders()) installWithApt(BUILD_PACKAGES)
  fs.mkdirSync(path.dirname(prefix), { recursive: true })
  const work = fs.mkdtempSync(path.join(path.dirname(prefix), `.build-pgbouncer-`))
  try {
    const response = await fetch(SOURCE_URL)
    if (!response.ok) throw new Error(`GET ${SOURCE_URL}: HTTP ${response.status}`)
    const bytes = Buffer.from(await response.arrayBuffer())
    const sha = crypto.createHash('sha256').update(bytes).digest('hex')
    if (sha !== SOURCE_SHA256) throw new Error(`${TARBALL}: SHA-256 ${sha}, expected ${SOURCE_SHA256}`)
    fs.writeFileSync(path.join(work, TARBALL), bytes)
    const src = path.join(work, `pgbouncer-${PREPARED_PGBOUNCER_VERSION}`)
    step('tar', ['xzf', TARBALL], work)
    step('./configure', [`--prefix=${prefix}`, '--without-cares', '--without-systemd', '--without-pam'], src)
    step('make', ['-j2'], src)
    step('make', ['install'], src)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
  if (!fs.existsSync(bin)) throw new Error(`building PgBouncer left no ${bin}`)
  // Runs as the postgres OS user: every directory on the way must be readable by it.
  for (let dir = path.dirname(bin); dir.length > 1 && dir !== '/tmp'; dir = path.dirname(dir)) {
    fs.chmodSync(dir, 0o755)
  }
  return bin
}

function hasHeaders() {
  return fs.existsSync('/usr/include/event2/event.h') && fs.existsSync('/usr/include/openssl/ssl.h')
}

function step(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 })
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').slice(-20).join('\n')
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${out}`)
  }
}
