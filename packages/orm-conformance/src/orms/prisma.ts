import type { Keel } from '@keel/core'
import { PrismaPg } from '@prisma/adapter-pg'
import type pg from 'pg'
import { Prisma, PrismaClient } from '../../generated/prisma/client.js'
import type { Isolation, OrmFixture, OrmStatements, OrmTransaction } from '../suite/orm-under-test.js'
import { TenantClients } from './tenant-clients.js'

type Client = PrismaClient | Prisma.TransactionClient

const LEVELS = {
  'read committed': Prisma.TransactionIsolationLevel.ReadCommitted,
  'repeatable read': Prisma.TransactionIsolationLevel.RepeatableRead,
  serializable: Prisma.TransactionIsolationLevel.Serializable,
} as const satisfies Record<Isolation, Prisma.TransactionIsolationLevel>

// Interactive transactions wait at most 2 s to start by default: 200 requests queue longer than that
// behind keel's per-tenant connection share. A new object per call: a nested $transaction writes the outer
// transaction's id into the options object it is given (newTxId), which a shared constant would carry into
// the next top-level transaction ("Transaction already closed").
const txOptions = () => ({ maxWait: 30_000, timeout: 30_000 })

function statements(client: () => Client): OrmStatements {
  return {
    invoices: async () =>
      // A lazy builder: awaited here, inside the caller's keel.run, not by whoever awaits the result.
      await client().invoice.findMany({ select: { tenantId: true, number: true }, orderBy: { id: 'asc' } }),
    // By the globally unique id alone, no tenant in the where: what Prisma's dataloader merges across
    // callers of one tick (findUnique), and where a merge run in another tenant's scope would hand out
    // that tenant's row.
    invoiceById: async (id) =>
      await client().invoice.findUnique({
        where: { id: BigInt(id) },
        select: { tenantId: true, number: true },
      }),
    insertInvoice: async (row) => {
      await client().invoice.create({
        data: {
          tenantId: row.tenantId,
          number: row.number,
          amount: row.amount,
          issuedOn: new Date(`${row.issuedOn}T00:00:00Z`),
          dueAt: new Date(`${row.dueAt.replace(' ', 'T')}Z`),
        },
      })
    },
  }
}

function transaction(tx: Prisma.TransactionClient): OrmTransaction {
  return {
    ...statements(() => tx),
    // Prisma 7 runs a $transaction inside an interactive transaction as a SAVEPOINT.
    savepoint: (fn) => (tx as unknown as PrismaClient).$transaction((sp) => fn(transaction(sp)), txOptions()),
    isolation: async () => {
      const rows = await tx.$queryRaw<
        Array<{ level: string }>
      >`SELECT current_setting('transaction_isolation') AS level`
      return rows[0]!.level
    },
  }
}

/**
 * The clients the suite runs Prisma through. On keel.pgPool() (`keel` given): one PrismaClient per
 * tenant, picked by keel.current() at each call, never one client for every tenant — Prisma's dataloader
 * sends the findUnique calls of one tick as one query in the first caller's context (ADR 0031 addendum).
 * On a raw pool (the reference the join is compared with): one client.
 */
function prismaClients(
  pool: pg.Pool,
  keel: Keel | undefined,
): { get: () => PrismaClient; close: () => Promise<void> } {
  // A new PrismaPg per client: an adapter is one client's. `new PrismaPg(keel.pgPool())` is keel's
  // documented form; only the tenant a client serves is fixed.
  const create = () => new PrismaClient({ adapter: new PrismaPg(pool) })
  if (keel === undefined) {
    const prisma = create()
    return { get: () => prisma, close: () => prisma.$disconnect() }
  }
  // $disconnect() leaves an external pool open (PrismaPg's disposeExternalPool is off); a client used
  // after it reconnects, so dropping one a request still holds is harmless.
  const clients = new TenantClients(keel, create, { max: 100, dispose: (c) => c.$disconnect() })
  return { get: () => clients.get(), close: () => clients.disposeAll() }
}

/** Prisma 7 over any pg.Pool: `new PrismaPg(pool)` takes an instanceof pg.Pool as its pool. */
export const prismaFixture: OrmFixture = {
  name: 'Prisma',
  open(pool, _startUp, keel) {
    const clients = prismaClients(pool, keel)
    const prisma = clients.get
    return {
      ...statements(prisma),
      transaction: async (fn, isolation) => {
        await prisma().$transaction(
          (tx) => fn(transaction(tx)),
          isolation ? { ...txOptions(), isolationLevel: LEVELS[isolation] } : txOptions(),
        )
      },
      join: async () =>
        await prisma().invoice.findMany({
          include: { payments: { orderBy: { id: 'asc' } } },
          orderBy: { id: 'asc' },
          relationLoadStrategy: 'join',
        }),
      joinAmounts: (rows) =>
        (rows as Array<{ amount: Prisma.Decimal; payments: Array<{ amount: Prisma.Decimal }> }>).flatMap(
          (i) => i.payments.map((p): [string, string] => [i.amount.toString(), p.amount.toString()]),
        ),
      // $disconnect() leaves an external pool open (PrismaPg's disposeExternalPool is off).
      close: clients.close,
    }
  },
}
