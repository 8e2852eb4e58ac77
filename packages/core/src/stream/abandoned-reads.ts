import { KeelError } from '../errors.js'
import type { ReadTransaction } from './read-transaction.js'

/** The transaction behind a stream object, filled in once it is open. */
export interface ReadHolder {
  read?: ReadTransaction
}

/**
 * A stream the app dropped without finishing it (an iterator never returned, an export neither read to
 * the end nor destroyed) would hold its connection and snapshot until keel.close(). Once the stream
 * object is garbage, its transaction ends and the connection is retired (nothing vouches for it). A backstop only: when
 * the collector runs is not ours to choose, so the docs tell apps to consume with for await/pipeline.
 */
const registry = new FinalizationRegistry<ReadHolder>((holder) => {
  void holder.read
    ?.end(new KeelError('KEEL_ABORTED', 'the stream was dropped before it ended'), true)
    .catch(() => undefined)
})

/** Ends `holder`'s transaction once `stream` is collected (a no-op if it ended before). */
export function endWhenDropped(stream: object, holder: ReadHolder): void {
  registry.register(stream, holder)
}
