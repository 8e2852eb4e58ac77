import type { Keel } from '@keel/core'

/**
 * Express has no shutdown hook: this closes keel once the HTTP server has closed (after
 * `server.close()` and its last connection), so requests in flight keep their pools. The promise
 * settles when keel has drained; await it in shutdown code.
 */
export function closeKeelWithServer(
  server: { once(event: 'close', listener: () => void): unknown },
  keel: Keel,
): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('close', () => keel.close().then(resolve, reject))
  })
}
