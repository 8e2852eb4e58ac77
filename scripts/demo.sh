#!/usr/bin/env bash
# The README's first command: installs, starts the local stack (unless URLs are configured), runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_installed
ensure_built
ensure_stack
node examples/dist/demo.js
