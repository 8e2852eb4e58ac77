/**
 * What travels on `<prefix>:events`, as JSON. An invalidation names its sender (which applied it
 * already) and the channel its acknowledgements go to; a fill tells processes waiting for another's
 * loader that the key's value is in Redis now. Acknowledgements go on the sender's ack channel and
 * carry only the invalidation's id.
 */
export interface InvalidationMessage {
  t: 'inv'
  id: string
  from: string
  ack: string
  s: string
  k: readonly string[]
  g: readonly string[]
}

export interface FillMessage {
  t: 'fill'
  s: string
  k: string
}

export type BusMessage = InvalidationMessage | FillMessage

export function fillMessage(scope: string, key: string): string {
  const message: FillMessage = { t: 'fill', s: scope, k: key }
  return JSON.stringify(message)
}

/** The message, or undefined when it is not JSON (never from keel). */
export function parseBusMessage(raw: string): BusMessage | undefined {
  try {
    return JSON.parse(raw) as BusMessage
  } catch {
    return undefined
  }
}
