import type { HttpErrorResponse } from '@keel/core'
import type { Response } from 'express'

export function sendKeelError(res: Response, mapped: HttpErrorResponse): void {
  res.status(mapped.status).set(mapped.headers).json(mapped.body)
}
