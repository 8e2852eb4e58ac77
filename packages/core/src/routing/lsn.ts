/** A WAL position as Postgres prints it (`16/B374D848`), as a comparable 64-bit integer. */
export type Lsn = bigint

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/

export function parseLsn(text: string | null | undefined): Lsn | undefined {
  if (typeof text !== 'string') return undefined
  const m = LSN.exec(text)
  if (m === null) return undefined
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`)
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}
