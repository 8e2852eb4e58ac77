import type { Worker, WorkerListener } from 'bullmq'

/**
 * What `keel.startWorker()` returns: BullMQ's workers of one start, one per job queue (ADR 0025), driven
 * as one. keel.close() closes them; `close()` here stops this start only.
 */
export class JobWorker {
  /** One BullMQ Worker per job name this start runs. */
  readonly workers: readonly Worker[]

  constructor(workers: readonly Worker[]) {
    this.workers = workers
  }

  /** Resolves when every queue's worker is connected; rejects with the first failure. */
  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()))
  }

  /** Listens on every queue's worker (BullMQ's events: completed, failed, error, ...). */
  on<E extends keyof WorkerListener>(event: E, listener: WorkerListener[E]): this {
    for (const worker of this.workers) worker.on(event, listener)
    return this
  }

  isRunning(): boolean {
    return this.workers.some((w) => w.isRunning())
  }

  /** Stops taking jobs and waits for the running ones (`force`: does not wait). */
  async close(force = false): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close(force)))
  }
}
