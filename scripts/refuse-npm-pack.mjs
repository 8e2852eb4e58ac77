// prepack of the adapters: `npm pack`/`npm publish` copy `workspace:^` into the published package.json
// (only pnpm rewrites it to a real range), so a tarball made with npm could never be installed. A dry
// run (`npm pack --dry-run`, to list the files) only warns.
const agent = process.env.npm_config_user_agent ?? ''
if (agent.startsWith('npm/')) {
  const message =
    'Pack and publish keel packages with pnpm (pnpm pack / pnpm publish): npm leaves workspace: ranges in package.json.'
  console.error(message)
  if (process.env.npm_config_dry_run !== 'true') process.exit(1)
}
