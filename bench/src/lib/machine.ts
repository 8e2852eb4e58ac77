import os from 'node:os'
import { round } from './stats.js'

/** What every result file records about the machine it was measured on. */
export interface MachineMeta {
  date: string
  node: string
  platform: string
  cpuModel: string
  cores: number
  memoryGiB: number
  /** At the start of the run: the machine is shared, and its load moves every absolute number. */
  loadAverage: number[]
}

export function machineMeta(): MachineMeta {
  const cpus = os.cpus()
  return {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    loadAverage: os.loadavg().map((x) => round(x, 2)),
  }
}

/**
 * Says whether the run started on a busy machine, from the load average the run recorded (never a
 * sentence written in advance: a result file must not claim a condition its run did not measure).
 */
export function loadNote(meta: MachineMeta): string {
  const [one = 0] = meta.loadAverage
  return one > meta.cores * 0.75
    ? `**started on a busy machine** (load average ${one} on ${meta.cores} cores: an earlier run still in the average, or other work; compare the rows of one run, not absolute numbers)`
    : `the machine otherwise idle when the run started (load average ${one} on ${meta.cores} cores)`
}
