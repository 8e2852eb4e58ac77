/** `"name"` quoted only when Postgres needs it, so fixes read like what people type. */
export function ident(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`
}

export function qualified(schema: string, name: string): string {
  return `${ident(schema)}.${ident(name)}`
}

export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`
}
