// Helpers for tests that use the local service stack (scripts/stack.mjs).
// Node built-ins only; see client.d.mts for types.
//
//   import { readStack, stackCtl } from '../../scripts/stack/client.mjs';
//   const stack = await readStack();          // parsed .keel/stack.json
//   await stackCtl('kill', 'replica1');       // fault injection
//   await stackCtl('start', 'replica1');      // waits until it streams again
//   await stackCtl('up', 'pgbouncer');        // on demand: PgBouncers in transaction mode (stack.pgbouncer)

import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
/** Repository root: parent of scripts/. */
export const REPO_ROOT = path.resolve(HERE, '..', '..')
const STACK_SCRIPT = path.join(REPO_ROOT, 'scripts', 'stack.mjs')

/** Path of the connection-info file written by `node scripts/stack.mjs up`. */
export function stackFile(repoRoot = REPO_ROOT) {
  return path.join(path.resolve(repoRoot), '.keel', 'stack.json')
}

/** Read and parse <repoRoot>/.keel/stack.json. */
export async function readStack(repoRoot = REPO_ROOT) {
  const file = stackFile(repoRoot)
  let text
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if (err && err.code === 'ENOENT') {
      throw new Error(
        `keel local stack is not up: ${file} not found. Run \`node scripts/stack.mjs up\` first.`,
      )
    }
    throw err
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new Error(
      `could not parse ${file} (${err.message}); run \`node scripts/stack.mjs up\` to rewrite it.`,
    )
  }
}

/**
 * Run `node scripts/stack.mjs <command> [name]`. Resolves with its stdout when
 * it exits 0; rejects with an Error carrying stderr otherwise (or on timeout).
 */
export function stackCtl(command, name, { timeoutMs = 120_000 } = {}) {
  const args = [STACK_SCRIPT, command]
  if (name != null) args.push(name)
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(new Error(`could not run node scripts/stack.mjs ${args.slice(1).join(' ')}: ${err.message}`))
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) return resolve(stdout)
      const why = timedOut
        ? `timed out after ${timeoutMs}ms`
        : signal
          ? `killed by ${signal}`
          : `exit code ${code}`
      const err = new Error(
        `node scripts/stack.mjs ${args.slice(1).join(' ')} failed (${why}):\n${stderr.trim()}`,
      )
      err.exitCode = code
      err.stdout = stdout
      err.stderr = stderr
      reject(err)
    })
  })
}
