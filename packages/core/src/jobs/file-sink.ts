import { randomBytes } from 'node:crypto'
import { type FileHandle, open, rename, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { Writable } from 'node:stream'
import { KeelError } from '../errors.js'
import type { ExportSink, ExportSinkContext } from './export-job.js'

/**
 * An export sink writing a file atomically: each attempt writes its own temp file next to the target
 * (`.<name>.<random>.part`, same directory so the rename stays on one filesystem) and renames it over
 * the target only once everything was written and fsynced. A failed or crashed attempt never leaves a
 * partial or appended-to target; a failed one deletes its temp file (a SIGKILLed one cannot: its
 * `.part` stays for a sweep, see docs/runbooks/export-slow-or-big.md). Two attempts racing (a stalled
 * worker still running) each write their own temp file; the last rename wins with a complete file.
 */
export function fileSink(path: string | ((context: ExportSinkContext) => string)): ExportSink {
  if (typeof path !== 'string' && typeof path !== 'function') {
    throw new KeelError('KEEL_JOB_INVALID', 'fileSink(path): path must be a string or a function', {
      details: { field: 'path' },
    })
  }
  return (context) => {
    const target = typeof path === 'string' ? path : path(context)
    if (typeof target !== 'string' || target.length === 0) {
      throw new TypeError('fileSink: the path function returned no path')
    }
    return new AtomicFileWritable(target)
  }
}

class AtomicFileWritable extends Writable {
  readonly #target: string
  readonly #temp: string
  #file: FileHandle | undefined
  #committed = false

  constructor(target: string) {
    super()
    this.#target = target
    this.#temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.part`)
  }

  override _construct(callback: (error?: Error | null) => void): void {
    open(this.#temp, 'wx').then(
      (file) => {
        this.#file = file
        callback()
      },
      (error: Error) => callback(error),
    )
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeAll([chunk]).then(() => callback(), callback)
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    this.#writeAll(chunks.map((c) => c.chunk)).then(() => callback(), callback)
  }

  /** A short write (allowed by POSIX) continues where it stopped. */
  async #writeAll(buffers: Buffer[]): Promise<void> {
    const data = buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers)
    let at = 0
    while (at < data.length) {
      const { bytesWritten } = await this.#file!.write(data, at, data.length - at)
      at += bytesWritten
    }
  }

  /** All written: fsync, close, then the rename that makes the file appear whole. */
  override _final(callback: (error?: Error | null) => void): void {
    const commit = async () => {
      const file = this.#file!
      await file.sync()
      await file.close()
      this.#file = undefined
      await rename(this.#temp, this.#target)
      this.#committed = true
    }
    commit().then(() => callback(), callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const cleanup = async () => {
      await this.#file?.close().catch(() => undefined)
      this.#file = undefined
      if (!this.#committed) await unlink(this.#temp).catch(() => undefined)
    }
    cleanup().then(
      () => callback(error),
      () => callback(error),
    )
  }
}
