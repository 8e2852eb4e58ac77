# Shared by demo.sh, test.sh and bench.sh: find or fetch the pinned pnpm, install, build.
PNPM_VERSION=12.4.2

pnpm_cmd() {
  if command -v pnpm >/dev/null 2>&1 && [ "$(pnpm --version 2>/dev/null)" = "$PNPM_VERSION" ]; then
    pnpm "$@"
  else
    npx --yes "pnpm@$PNPM_VERSION" "$@"
  fi
}

ensure_installed() {
  # Re-install when the lockfile changed since the last install.
  if [ ! -f node_modules/.modules.yaml ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
    echo "› installing dependencies (pnpm $PNPM_VERSION, frozen lockfile)"
    pnpm_cmd install --frozen-lockfile
  fi
}

ensure_built() {
  echo "› building packages"
  pnpm_cmd -r --filter './packages/*' --filter ./examples --filter ./bench run build >/dev/null
}

ensure_stack() {
  # Configured URLs (a real environment) win over the local stack.
  if [ -z "${KEEL_PG_PRIMARY_URL:-}" ]; then
    node scripts/stack.mjs up
  fi
}
