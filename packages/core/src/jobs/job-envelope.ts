/** What keel stores as a BullMQ job's data: the payload plus what the worker needs to resume the request. */
export interface JobEnvelope {
  readonly v: 1
  /** Tenant id: the worker's db, and the owner check of jobStatus. */
  readonly t: string
  readonly p: unknown
  /** The producer session's consistency token, if it had written. */
  readonly c?: string
  /** W3C trace context of the producer span. */
  readonly tc?: Record<string, string>
}

export function isEnvelope(data: unknown): data is JobEnvelope {
  const d = data as Partial<JobEnvelope> | null
  return d !== null && typeof d === 'object' && d.v === 1 && typeof d.t === 'string'
}
