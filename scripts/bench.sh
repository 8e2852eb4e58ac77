#!/usr/bin/env bash
# Runs keel's benchmarks against the local stack:
#   bash scripts/bench.sh [all|throughput|proxy|noisy|breakdown|replicas|cache|cache-profile|jobs|jobs-profile|http|pgbouncer|session-guard|orms|database|cluster|migrate|doctor|export|http-export]
# Results go to bench/results/ and bench/README.md. Tunables: see bench/README.md (BENCH_* variables).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scenario="${1:-all}"
case "$scenario" in
  all | throughput | loopback | proxy | noisy | breakdown | replicas | cache | cache-profile | jobs | jobs-profile | http | pgbouncer | session-guard | orms | database | cluster | migrate | doctor | export | http-export) ;;
  *)
    echo "usage: bash scripts/bench.sh [all|throughput|proxy|noisy|breakdown|replicas|cache|cache-profile|jobs|jobs-profile|http|pgbouncer|session-guard|orms|database|cluster|migrate|doctor|export|http-export]" >&2
    exit 2
    ;;
esac

if command -v pnpm >/dev/null 2>&1; then
  pnpm_cmd=(pnpm)
else
  pnpm_cmd=(npx --yes pnpm@12.4.2)
fi

if [ ! -d node_modules ] || [ ! -d bench/node_modules ]; then
  "${pnpm_cmd[@]}" install --frozen-lockfile
fi

"${pnpm_cmd[@]}" --filter @keel/core build
"${pnpm_cmd[@]}" --filter @keel/bench build
if [ "$scenario" = http ] || [ "$scenario" = http-export ]; then
  # The HTTP load drives the example app: it needs the adapters and examples/dist.
  "${pnpm_cmd[@]}" --filter @keel/express --filter @keel/fastify --filter @keel/examples build
fi
node scripts/stack.mjs up

case "$scenario" in
  replicas) node bench/dist/replicas.js ;;
  cache) node bench/dist/cache.js ;;
  cache-profile) node bench/dist/cache-profile.js ;;
  jobs) node bench/dist/jobs.js ;;
  jobs-profile) node bench/dist/jobs-profile.js ;;
  http) node bench/dist/http-load.js ;;
  http-export) node bench/dist/http-export.js ;;
  pgbouncer)
    node scripts/stack.mjs up pgbouncer
    node bench/dist/pgbouncer.js
    ;;
  cluster)
    node scripts/stack.mjs up redis-cluster
    node bench/dist/cluster.js
    ;;
  session-guard) node bench/dist/session-guard.js ;;
  orms) node bench/dist/orms.js ;;
  database) node bench/dist/database-mode.js ;;
  migrate)
    # Issue #14: the fleet run (500 schemas x 3 migrations) and the backfill vs one UPDATE.
    "${pnpm_cmd[@]}" --filter @keel/migrate build
    node bench/dist/migrate.js
    node bench/dist/backfill.js
    ;;
  doctor)
    # Issue #16: keel doctor over 500 schemas x 20 tables (schema mode, rls mode, rls + the live probe).
    "${pnpm_cmd[@]}" --filter @keel/migrate build
    node bench/dist/doctor.js
    ;;
  export) node bench/dist/export.js ;;
  all)
    node bench/dist/tenancy.js all
    node bench/dist/replicas.js
    node bench/dist/cache.js
    node bench/dist/jobs.js
    ;;
  *) node bench/dist/tenancy.js "$scenario" ;;
esac
