// The slice of BullMQ's shipped scripts keel splices its enqueue from (ADR 0019). BullMQ publishes no
// types for its CommonJS build's script modules; these are their shapes in bullmq 6.7.0.
declare module 'bullmq/dist/cjs/scripts/addPrioritizedJob-9.js' {
  export const addPrioritizedJob: { name: string; content: string; keys: number }
}
declare module 'bullmq/dist/cjs/scripts/addDelayedJob-6.js' {
  export const addDelayedJob: { name: string; content: string; keys: number }
}
