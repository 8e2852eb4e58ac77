import type { ServerResponse } from 'node:http'

/**
 * Runs `fn` just before the response's headers are written. Express has no hook for that; every way
 * to the wire (res.end, res.write, streams, res.writeHead itself) goes through writeHead, so the
 * instance's writeHead is wrapped once (the technique of the `on-headers` package).
 */
export function beforeHeaders(res: ServerResponse, fn: () => void): void {
  const writeHead = res.writeHead
  res.writeHead = function writeHeadAfterKeel(this: ServerResponse, ...args: unknown[]) {
    res.writeHead = writeHead
    fn()
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args)
  } as ServerResponse['writeHead']
}
