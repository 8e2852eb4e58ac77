/** Resolves when `done` does or after `timeoutMs`, whichever comes first; the timer never outlives it. */
export async function settleWithin(done: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))])
  } finally {
    clearTimeout(timer)
  }
}
