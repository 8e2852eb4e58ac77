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
