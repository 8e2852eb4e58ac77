export interface TcpProxy {
  /** The fixed loopback port keel is given. */
  readonly port: number
  /** The port it forwards to now. */
  readonly target: number
  /** A Postgres URL through the proxy (default user keel_app, database keel). */
  url(userAndPassword?: string, database?: string): string
  /** The server behind it dies: every connection reset, new ones refused. */
  cut(): Promise<void>
  /** Leads to `port` from now on (listening again after a cut). */
  point(port: number): Promise<void>
  close(): Promise<void>
}

export function startTcpProxy(targetPort: number, options?: { port?: number }): Promise<TcpProxy>
