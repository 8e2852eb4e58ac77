// BullMQ's shipped scripts (ADR 0019, 0028): BullMQ publishes no types for its CommonJS build's script
// modules. Each export is `{ name, content, keys }`; bullmq-internals.ts reads the ones keel splices.
declare module 'bullmq/dist/cjs/scripts/index.js' {
  const script: { name: string; content: string; keys: number }
  export const addPrioritizedJob: typeof script
  export const addDelayedJob: typeof script
}
