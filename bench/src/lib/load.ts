import { type CpuDelta, CpuMeter } from './cpu.js'
import { type LatencySummary, Samples, summarize } from './stats.js'

export interface LoopOptions {
  /** Concurrent callers, each awaiting its previous call before issuing the next. */
  concurrency: number
  /** How long callers keep issuing new calls; calls in flight at the deadline still complete. */
  seconds: number
  cpu?: CpuMeter | undefined
}

export interface LoopResult {
  ops: number
  errors: number
  firstError: string | undefined
  elapsedS: number
  qps: number
  latency: LatencySummary
  cpu: CpuDelta | undefined
}

/**
 * A fixed-duration closed loop: `concurrency` callers each run `op` back to back until the deadline.
 * Throughput is completed calls over the wall time until the last caller finished.
 */
export async function closedLoop(op: () => Promise<unknown>, options: LoopOptions): Promise<LoopResult> {
  const samples = new Samples()
  let ops = 0
  let errors = 0
  let firstError: string | undefined
  let stop = false
  const cpuBefore = await options.cpu?.snapshot()
  const started = performance.now()
  const timer = setTimeout(() => {
    stop = true
  }, options.seconds * 1_000)

  const caller = async (): Promise<void> => {
    while (!stop) {
      const t0 = performance.now()
      try {
        await op()
        samples.push(performance.now() - t0)
        ops++
      } catch (error) {
        errors++
        firstError ??=
          error instanceof Error
            ? `${(error as { code?: string }).code ?? error.name}: ${error.message}`
            : String(error)
        // A failing op must not spin the loop hot.
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }
  }

  await Promise.all(Array.from({ length: options.concurrency }, caller))
  clearTimeout(timer)
  const elapsedS = (performance.now() - started) / 1_000
  const cpuAfter = await options.cpu?.snapshot()
  return {
    ops,
    errors,
    firstError,
    elapsedS,
    qps: ops / elapsedS,
    latency: summarize(samples.values()),
    cpu: cpuBefore !== undefined && cpuAfter !== undefined ? CpuMeter.delta(cpuBefore, cpuAfter) : undefined,
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
