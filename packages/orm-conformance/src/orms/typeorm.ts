import type pg from 'pg'
import { DataSource, type EntityManager, EntitySchema } from 'typeorm'
import type { Isolation, OrmFixture, OrmStatements, OrmTransaction } from '../suite/orm-under-test.js'

export interface Invoice {
  tenantId: string
  id: string
  number: string
  amount: string
  issuedOn: string
  dueAt: Date
  createdAt: Date
  big: string
  payments?: Payment[]
}

export interface Payment {
  tenantId: string
  id: string
  invoiceId: string
  amount: string
  paidOn: string
  createdAt: Date
}

// EntitySchemas rather than decorated classes: the same mapping without decorator metadata.
export const InvoiceEntity = new EntitySchema<Invoice>({
  name: 'Invoice',
  tableName: 'orm_invoices',
  columns: {
    tenantId: { name: 'tenant_id', type: 'text', primary: true },
    id: { type: 'bigint', primary: true, generated: 'increment' },
    number: { type: 'text' },
    amount: { type: 'numeric', precision: 12, scale: 2 },
    issuedOn: { name: 'issued_on', type: 'date' },
    dueAt: { name: 'due_at', type: 'timestamp', precision: 6 },
    createdAt: { name: 'created_at', type: 'timestamptz', precision: 6, default: () => 'now()' },
    big: { type: 'bigint', default: 0 },
  },
})

export const PaymentEntity = new EntitySchema<Payment>({
  name: 'Payment',
  tableName: 'orm_payments',
  columns: {
    tenantId: { name: 'tenant_id', type: 'text', primary: true },
    id: { type: 'bigint', primary: true, generated: 'increment' },
    invoiceId: { name: 'invoice_id', type: 'bigint' },
    amount: { type: 'numeric', precision: 12, scale: 2 },
    paidOn: { name: 'paid_on', type: 'date' },
    createdAt: { name: 'created_at', type: 'timestamptz', precision: 6, default: () => 'now()' },
  },
})

const LEVELS = {
  'read committed': 'READ COMMITTED',
  'repeatable read': 'REPEATABLE READ',
  serializable: 'SERIALIZABLE',
} as const satisfies Record<Isolation, string>

function statements(manager: EntityManager): OrmStatements {
  return {
    invoices: () =>
      manager
        .getRepository(InvoiceEntity)
        .find({ select: { tenantId: true, number: true }, order: { id: 'ASC' } }),
    insertInvoice: async (row) => {
      await manager.insert(InvoiceEntity, {
        tenantId: row.tenantId,
        number: row.number,
        amount: row.amount,
        issuedOn: row.issuedOn,
        dueAt: new Date(`${row.dueAt.replace(' ', 'T')}Z`),
      })
    },
  }
}

function transaction(manager: EntityManager): OrmTransaction {
  return {
    ...statements(manager),
    // A transaction() on a transactional EntityManager is a SAVEPOINT (typeorm_1, typeorm_2, ...).
    savepoint: (fn) => manager.transaction((sp) => fn(transaction(sp))),
    isolation: async () => {
      const rows: Array<{ level: string }> = await manager.query(
        "SELECT current_setting('transaction_isolation') AS level",
      )
      return rows[0]!.level
    },
  }
}

/**
 * TypeORM over any pg.Pool: its `driver` option takes the pg module it should use, so a `{ Pool }` whose
 * constructor returns the pool makes TypeORM use that pool instead of building one.
 */
export const typeormFixture: OrmFixture = {
  name: 'TypeORM',
  async open(pool: pg.Pool, startUp) {
    const dataSource = new DataSource({
      type: 'postgres',
      driver: {
        Pool: function KeelPool() {
          return pool
        },
      },
      entities: [InvoiceEntity, PaymentEntity],
      synchronize: false,
      // No uuid/hstore columns: nothing to install (the runtime role could not anyway).
      installExtensions: false,
    })
    // initialize() asks Postgres for its version, database and current schema.
    await startUp(() => dataSource.initialize())
    const manager = dataSource.manager
    return {
      ...statements(manager),
      transaction: (fn, isolation) =>
        isolation
          ? manager.transaction(LEVELS[isolation], (tx) => fn(transaction(tx)))
          : manager.transaction((tx) => fn(transaction(tx))),
      join: () =>
        manager
          .getRepository(InvoiceEntity)
          .createQueryBuilder('i')
          .innerJoinAndMapMany('i.payments', 'Payment', 'p', 'p.tenantId = i.tenantId AND p.invoiceId = i.id')
          .orderBy('i.id', 'ASC')
          .addOrderBy('p.id', 'ASC')
          .getMany(),
      joinAmounts: (rows) =>
        (rows as Invoice[]).flatMap((i) =>
          (i.payments ?? []).map((p): [string, string] => [i.amount, p.amount]),
        ),
      // destroy() would end the pool TypeORM was given: the pool is the app's (keel's) to close.
      close: async () => {},
    }
  },
}
