#!/usr/bin/env bash
# The README's second command: installs, builds, starts the local stack when it is not up, runs every
# suite against it, and ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_installed
ensure_built
node scripts/stack.mjs up
mkdir -p .keel
status=0
# The stack is up: the projects' global setup need not run `up` (and print its block) again.
KEEL_TEST_STACK_UP=1 pnpm_cmd exec vitest run --reporter=default --reporter=json --outputFile.json=.keel/vitest-report.json "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(".keel/vitest-report.json", "utf8"))
  const skipped = r.numPendingTests + r.numTodoTests
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""))
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1) }
' || status=1
exit $status
