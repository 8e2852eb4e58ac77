import { LRUCache } from 'lru-cache'
import type { ResolvedConfig } from '../config/config-schema.js'
import type { TenantPlacement, TenantResolver } from '../config/tenancy-schema.js'
import { KeelError } from '../errors.js'
import { DatabaseStrategy } from '../tenancy/database-strategy.js'
import { RlsStrategy } from '../tenancy/rls-strategy.js'
import { SchemaStrategy } from '../tenancy/schema-strategy.js'
import type { TenancyStrategy } from '../tenancy/tenancy-strategy.js'
import type { ClusterRegistry } from './cluster-registry.js'
import type { Placement } from './placement.js'
import { checkPlacement } from './placement-config.js'

/**
 * Each tenant's placement (ADR 0032). rls and schema modes have one, the configured cluster with the
 * mode's scope, known at once; database mode asks tenancy.resolve, once per tenant per TTL.
 */
export interface Placements {
  readonly registry: ClusterRegistry
  /** rls and schema modes: every tenant's placement. Undefined in database mode. */
  readonly fixed: Placement | undefined
  /** Refuses, with KEEL_TENANT_INVALID, an id this tenancy cannot place, before any SQL is sent. */
  validate(tenantId: string): void
  /** The tenant's placement: at once when known, else its resolution (shared by concurrent calls). */
  of(tenantId: string): Placement | Promise<Placement>
  /** Forgets the tenant's placement: the next call resolves it again (a tenant moved). */
  invalidate(tenantId: string): void
}

type Tenancy = ResolvedConfig['tenancy']
type DatabaseTenancy = Extract<Tenancy, { mode: 'database' }>

/** rls and schema modes: one cluster, one scope, for every tenant. */
export class FixedPlacements implements Placements {
  readonly registry: ClusterRegistry
  readonly fixed: Placement
  readonly #strategy: TenancyStrategy

  constructor(registry: ClusterRegistry, config: Readonly<ResolvedConfig>) {
    const tenancy = config.tenancy
    const pg = config.postgres
    this.registry = registry
    this.#strategy =
      tenancy.mode === 'rls'
        ? new RlsStrategy(tenancy.setting)
        : tenancy.mode === 'schema'
          ? new SchemaStrategy(tenancy.schemaFor, tenancy.sharedSchemas)
          : new DatabaseStrategy()
    const cluster = registry.cluster(pg.primary!, pg.replicas, tenancy.mode === 'rls')
    this.fixed = { cluster, scope: this.#strategy, key: cluster.key }
  }

  validate(tenantId: string): void {
    this.#strategy.validate?.(tenantId)
  }

  of(): Placement {
    return this.fixed
  }

  invalidate(): void {}
}

interface Entry {
  readonly placement: Placement | null
}

/** An unknown tenant is remembered briefly: bursts for it cost one resolve, a new tenant appears soon. */
const UNKNOWN_TTL_MS = 1_000

/**
 * Database mode: tenancy.resolve(id), cached (TTL, size bound), concurrent calls for one tenant
 * sharing one resolution, bounded by resolveTimeoutMs. A resolver that throws, hangs or returns a
 * malformed placement fails the call with KEEL_TENANT_RESOLVE_FAILED (its error as the cause); null is
 * KEEL_TENANT_UNKNOWN. Either way no session gets half a placement and nothing is sent.
 */
export class ResolvedPlacements implements Placements {
  readonly registry: ClusterRegistry
  readonly fixed = undefined
  readonly #tenancy: DatabaseTenancy
  readonly #resolve: TenantResolver
  readonly #cache: LRUCache<string, Entry>
  /** Resolutions under way; `ticket` tells a resolution invalidated meanwhile from the current one. */
  readonly #pending = new Map<string, { ticket: object; promise: Promise<Placement> }>()
  readonly #database = new DatabaseStrategy()
  readonly #rls: RlsStrategy

  constructor(registry: ClusterRegistry, tenancy: DatabaseTenancy) {
    this.registry = registry
    this.#tenancy = tenancy
    this.#resolve = tenancy.resolve
    this.#rls = new RlsStrategy(tenancy.setting)
    this.#cache = new LRUCache<string, Entry>({
      max: tenancy.resolveCacheMax,
      ...(tenancy.resolveCacheTtlMs > 0 ? { ttl: tenancy.resolveCacheTtlMs, ttlAutopurge: false } : {}),
    })
  }

  validate(): void {}

  of(tenantId: string): Placement | Promise<Placement> {
    const entry = this.#cache.get(tenantId)
    if (entry !== undefined) {
      if (entry.placement === null) return Promise.reject(unknownTenant(tenantId))
      return entry.placement
    }
    const under = this.#pending.get(tenantId)
    if (under !== undefined) return under.promise
    const ticket = {}
    const promise = this.#lookup(tenantId, ticket)
    this.#pending.set(tenantId, { ticket, promise })
    const done = () => {
      if (this.#pending.get(tenantId)?.ticket === ticket) this.#pending.delete(tenantId)
    }
    promise.then(done, done)
    return promise
  }

  invalidate(tenantId: string): void {
    this.#cache.delete(tenantId)
    // A resolution under way may have read the old placement: the next call starts a fresh one.
    this.#pending.delete(tenantId)
  }

  async #lookup(tenantId: string, ticket: object): Promise<Placement> {
    const value = await this.#call(tenantId)
    // Invalidated while resolving: this call is served, but what may be the old placement is not kept.
    const current = this.#pending.get(tenantId)?.ticket === ticket
    if (value === null || value === undefined) {
      if (current) {
        const ttl = Math.min(UNKNOWN_TTL_MS, this.#tenancy.resolveCacheTtlMs || UNKNOWN_TTL_MS)
        this.#cache.set(tenantId, { placement: null }, { ttl })
      }
      throw unknownTenant(tenantId)
    }
    const checked = checkPlacement(tenantId, value)
    if (this.registry.ended) throw new KeelError('KEEL_CLOSED', 'this keel instance is closed')
    const scope = this.#scope(tenantId, checked.isolation, checked.schema)
    const cluster = this.registry.cluster(checked.primary, checked.replicas, checked.isolation === 'rls')
    const placement: Placement = {
      cluster,
      scope,
      key:
        checked.isolation === 'schema'
          ? `${cluster.key}#${checked.schema ?? `tenant_${tenantId}`}`
          : cluster.key,
    }
    if (current) this.#cache.set(tenantId, { placement })
    return placement
  }

  #scope(
    tenantId: string,
    isolation: 'database' | 'rls' | 'schema',
    schema: string | undefined,
  ): TenancyStrategy {
    if (isolation === 'database') return this.#database
    if (isolation === 'rls') return this.#rls
    const name = schema ?? `tenant_${tenantId}`
    const strategy = new SchemaStrategy(() => name, this.#tenancy.sharedSchemas)
    try {
      strategy.validate(tenantId)
    } catch (error) {
      throw new KeelError(
        'KEEL_TENANT_RESOLVE_FAILED',
        `tenancy.resolve(${JSON.stringify(tenantId)}) gave a schema name keel cannot use`,
        {
          cause: error,
          details: { tenantId },
        },
      )
    }
    return strategy
  }

  /** resolve(id), bounded by resolveTimeoutMs; its failure becomes KEEL_TENANT_RESOLVE_FAILED. */
  #call(tenantId: string): Promise<TenantPlacement | null | undefined> {
    const timeoutMs = this.#tenancy.resolveTimeoutMs
    return new Promise((resolve, reject) => {
      const fail = (cause: unknown, why: string) =>
        reject(
          new KeelError('KEEL_TENANT_RESOLVE_FAILED', `tenancy.resolve(${JSON.stringify(tenantId)}) ${why}`, {
            cause,
            details: { tenantId },
          }),
        )
      const timer = setTimeout(
        () => fail(undefined, `did not settle within ${timeoutMs} ms (tenancy.resolveTimeoutMs)`),
        timeoutMs,
      )
      timer.unref()
      let result: ReturnType<TenantResolver>
      try {
        result = this.#resolve(tenantId)
      } catch (error) {
        clearTimeout(timer)
        return fail(error, `threw: ${messageOf(error)}`)
      }
      Promise.resolve(result).then(
        (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        (error: unknown) => {
          clearTimeout(timer)
          fail(error, `failed: ${messageOf(error)}`)
        },
      )
    })
  }
}

function unknownTenant(tenantId: string): KeelError {
  return new KeelError(
    'KEEL_TENANT_UNKNOWN',
    `tenant ${JSON.stringify(tenantId)} is not known (tenancy.resolve returned null)`,
    {
      details: { tenantId },
    },
  )
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
