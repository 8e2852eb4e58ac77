// keel's Lua scripts are .lua files, bundled as text at build time (tsup `loader: { '.lua': 'text' }`,
// and the same transform in vitest.config.ts), so they read, diff and lint as Lua (ADR 0030).
declare module '*.lua' {
  const text: string
  export default text
}
