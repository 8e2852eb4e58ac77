/**
 * One 'abort' listener per signal, however many of keel's calls wait on it. An app may hand the same
 * signal (a request's, a job's) to many concurrent queries; a listener each put more than ten on it and
 * Node printed MaxListenersExceededWarning although every one was removed when its call settled.
 */
interface Watch {
  readonly callbacks: Set<() => void>
  readonly listener: () => void
}

const watches = new WeakMap<AbortSignal, Watch>()

/**
 * Calls `onAbort` once if `signal` aborts before the returned function is called; that function stops
 * watching (and removes keel's listener from the signal when no call of keel's still watches it).
 */
export function watchAbort(signal: AbortSignal, onAbort: () => void): () => void {
  let watch = watches.get(signal)
  if (watch === undefined) {
    const callbacks = new Set<() => void>()
    const listener = () => {
      watches.delete(signal)
      for (const callback of [...callbacks]) callback()
      callbacks.clear()
    }
    watch = { callbacks, listener }
    watches.set(signal, watch)
    signal.addEventListener('abort', listener, { once: true })
  }
  const own = watch
  // A function of its own: the same `onAbort` passed twice is two watchers.
  const callback = () => onAbort()
  own.callbacks.add(callback)
  return () => {
    if (!own.callbacks.delete(callback) || own.callbacks.size > 0) return
    signal.removeEventListener('abort', own.listener)
    if (watches.get(signal) === own) watches.delete(signal)
  }
}
