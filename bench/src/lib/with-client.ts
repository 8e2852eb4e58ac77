import pg from 'pg'

/** Runs `body` on a pg.Client of its own, connected to `url` and ended afterwards. */
export async function withClient<T>(url: string, body: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return await body(c)
  } finally {
    await c.end()
  }
}
