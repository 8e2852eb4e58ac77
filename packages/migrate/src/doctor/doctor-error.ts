/** The codes the doctor raises when it cannot run at all (a finding is never an error). */
export type DoctorErrorCode = 'KEEL_DOCTOR_CONFIG_INVALID' | 'KEEL_DOCTOR_ROLE_UNKNOWN'

/**
 * A doctor run that could not start: bad options, or a runtime role the database does not know. Shaped
 * like @keel/core's KeelError (code, details, cause) without depending on core's closed code table.
 */
export class DoctorError extends Error {
  readonly code: DoctorErrorCode
  readonly details: Readonly<Record<string, unknown>>

  constructor(
    code: DoctorErrorCode,
    message: string,
    options: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'KeelError'
    this.code = code
    this.details = options.details ?? {}
  }
}
