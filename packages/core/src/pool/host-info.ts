export interface HostConfig {
  connectionString?: string | undefined
  host?: string | undefined
  port?: number | undefined
  user?: string | undefined
  password?: string | undefined
  database?: string | undefined
  ssl?: boolean | Record<string, unknown> | undefined
}

/** Where a host is, for spans and health output: never the user or password. */
export interface HostInfo {
  readonly name: string
  readonly role: 'primary' | 'replica'
  readonly address: string
  readonly port: number
  readonly database: string
}

export function hostInfo(config: HostConfig, name: string, role: HostInfo['role']): HostInfo {
  let address = config.host ?? 'localhost'
  let port = config.port ?? 5432
  let database = config.database
  if (config.connectionString !== undefined) {
    const url = new URL(config.connectionString)
    if (config.host === undefined && url.hostname !== '') address = url.hostname
    if (config.port === undefined && url.port !== '') port = Number(url.port)
    if (database === undefined && url.pathname.length > 1)
      database = decodeURIComponent(url.pathname.slice(1))
  }
  return { name, role, address, port, database: database ?? config.user ?? 'postgres' }
}
