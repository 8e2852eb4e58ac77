import type { Keel } from '@keel/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ormKeel } from '../support/keel.js'
import { allRows, createOrmTables, rawOwnerPool, TENANTS } from '../support/schema.js'
import { rejectionCodes } from './error-chain.js'
import type { NewInvoice, OrmFixture, OrmUnderTest } from './orm-under-test.js'

class Boom extends Error {}

/** Numbers written by this run only: each test's rows are its own. */
let serial = 0
function invoice(tenantId: string, label: string): NewInvoice {
  serial += 1
  return {
    tenantId,
    number: `${label}-${process.pid}-${serial}`,
    amount: `${serial}.25`,
    issuedOn: '2024-05-06',
    dueAt: '2024-05-06 23:45:00',
  }
}

async function committedNumbers(tenant: string): Promise<string[]> {
  return (await allRows('orm_invoices')).filter((r) => r.tenant_id === tenant).map((r) => String(r.number))
}

/**
 * The contract issue #12 sets for an ORM on keel, run once per ORM against the real stack: one ORM
 * instance per process on `keel.pgPool()` (it follows keel.current()), the tenant given by keel.run().
 */
export function ormSuite(fixture: OrmFixture): void {
  describe(`${fixture.name} on keel.pgPool()`, () => {
    let keel: Keel
    let orm: OrmUnderTest
    const as = <T>(tenant: string, fn: () => Promise<T>): Promise<T> => keel.run(keel.tenant(tenant), fn)

    beforeAll(async () => {
      await createOrmTables()
      keel = ormKeel()
      orm = await fixture.open(keel.pgPool(), (fn) => as('acme', fn), keel)
    })
    afterAll(async () => {
      await orm?.close()
      await keel?.close()
    })

    it("selects see only the tenant's rows", async () => {
      for (const tenant of TENANTS) {
        const rows = await as(tenant, () => orm.invoices())
        expect(rows.map((r) => r.number)).toEqual([`${tenant}-1`, `${tenant}-2`, `${tenant}-3`])
        expect(new Set(rows.map((r) => r.tenantId))).toEqual(new Set([tenant]))
      }
    })

    it('outside keel.run the ORM gets KEEL_NO_TENANT_CONTEXT, never an unscoped query', async () => {
      expect(await rejectionCodes(orm.invoices())).toContain('KEEL_NO_TENANT_CONTEXT')
    })

    it("inserting another tenant's row is refused (42501)", async () => {
      const row = invoice('globex', 'intruder')
      expect(await rejectionCodes(as('acme', () => orm.insertInvoice(row)))).toContain('42501')
      expect(await committedNumbers('globex')).not.toContain(row.number)
      // The same call for its own tenant goes through: the refusal was the policy, not the ORM call.
      const own = invoice('acme', 'own')
      await as('acme', () => orm.insertInvoice(own))
      expect(await committedNumbers('acme')).toContain(own.number)
    })

    it('a transaction of two statements rolls back on throw and commits otherwise', async () => {
      const [a, b] = [invoice('acme', 'rolled'), invoice('acme', 'rolled')]
      await expect(
        as('acme', () =>
          orm.transaction(async (tx) => {
            await tx.insertInvoice(a)
            await tx.insertInvoice(b)
            expect((await tx.invoices()).map((r) => r.number)).toEqual(
              expect.arrayContaining([a.number, b.number]),
            )
            throw new Boom('rollback')
          }),
        ),
      ).rejects.toThrow(Boom)
      expect(await committedNumbers('acme')).not.toEqual(expect.arrayContaining([a.number]))
      expect(await committedNumbers('acme')).not.toEqual(expect.arrayContaining([b.number]))

      const [c, d] = [invoice('acme', 'kept'), invoice('acme', 'kept')]
      await as('acme', () =>
        orm.transaction(async (tx) => {
          await tx.insertInvoice(c)
          await tx.insertInvoice(d)
        }),
      )
      expect(await committedNumbers('acme')).toEqual(expect.arrayContaining([c.number, d.number]))
    })

    it('a statement Postgres refuses inside a transaction rolls it back, and the next one commits', async () => {
      const [mine, intruder, after] = [
        invoice('acme', 'before'),
        invoice('globex', 'refused'),
        invoice('acme', 'after'),
      ]
      const codes = await rejectionCodes(
        as('acme', () =>
          orm.transaction(async (tx) => {
            await tx.insertInvoice(mine)
            await tx.insertInvoice(intruder)
          }),
        ),
      )
      expect(codes).toContain('42501')
      expect(await committedNumbers('acme')).not.toContain(mine.number)
      await as('acme', () => orm.transaction((tx) => tx.insertInvoice(after)))
      expect(await committedNumbers('acme')).toContain(after.number)
    })

    it("an ORM transaction inside keel's db.transaction is a savepoint of it", async () => {
      const [inner, outer] = [invoice('umbrella', 'orm-in-keel'), invoice('umbrella', 'keel-outer')]
      const db = keel.tenant('umbrella')
      // As in a request: the handler runs in keel.run(db), and opens keel's transaction there.
      await expect(
        keel.run(db, () =>
          db.transaction(async (tx) => {
            await tx.query(
              'INSERT INTO orm_invoices (tenant_id, number, amount, issued_on, due_at) VALUES ($1, $2, 1, now(), now())',
              ['umbrella', outer.number],
            )
            // keel.current() is the transaction here: the ORM's BEGIN opens a savepoint of it.
            await orm.transaction((otx) => otx.insertInvoice(inner))
            const seen = (await orm.invoices()).map((r) => r.number)
            expect(seen).toEqual(expect.arrayContaining([outer.number, inner.number]))
            throw new Boom('outer rollback')
          }),
        ),
      ).rejects.toThrow(Boom)
      const committed = await committedNumbers('umbrella')
      expect(committed).not.toContain(inner.number)
      expect(committed).not.toContain(outer.number)
    })

    it('nested savepoints roll back only their own part', async () => {
      const [outer, inner, innermost, sibling] = ['outer', 'inner', 'innermost', 'sibling'].map((l) =>
        invoice('initech', l),
      ) as [NewInvoice, NewInvoice, NewInvoice, NewInvoice]
      await as('initech', () =>
        orm.transaction(async (tx) => {
          await tx.insertInvoice(outer)
          await tx.savepoint(async (sp1) => {
            await sp1.insertInvoice(inner)
            await expect(
              sp1.savepoint(async (sp2) => {
                await sp2.insertInvoice(innermost)
                throw new Boom('innermost')
              }),
            ).rejects.toThrow(Boom)
          })
          await expect(
            tx.savepoint(async (sp) => {
              await sp.insertInvoice(sibling)
              throw new Boom('sibling')
            }),
          ).rejects.toThrow(Boom)
          const seen = (await tx.invoices()).map((r) => r.number)
          expect(seen).toEqual(expect.arrayContaining([outer.number, inner.number]))
          expect(seen).not.toContain(innermost.number)
          expect(seen).not.toContain(sibling.number)
        }),
      )
      const committed = await committedNumbers('initech')
      expect(committed).toEqual(expect.arrayContaining([outer.number, inner.number]))
      expect(committed).not.toContain(innermost.number)
      expect(committed).not.toContain(sibling.number)
    })

    it('an isolation level reaches Postgres', async () => {
      for (const level of ['serializable', 'repeatable read'] as const) {
        let seen = ''
        await as('acme', () =>
          orm.transaction(async (tx) => {
            seen = await tx.isolation()
          }, level),
        )
        expect(seen).toBe(level)
      }
      let fallback = ''
      await as('acme', () =>
        orm.transaction(async (tx) => {
          fallback = await tx.isolation()
        }),
      )
      expect(fallback).toBe('read committed')
    })

    it('a join with duplicate column names and date/timestamp/timestamptz/numeric/bigint under TZ=Asia/Tokyo equals raw pg through the same ORM', async () => {
      // The project's vitest config sets TZ: a UTC run would hide the shifts this test is about.
      expect(new Date(2024, 2, 1).getTimezoneOffset()).toBe(-540)
      const raw = rawOwnerPool('umbrella')
      const onRaw = await fixture.open(raw, (fn) => fn())
      try {
        const expected = await onRaw.join()
        const actual = await as('umbrella', () => orm.join())
        expect(actual).toStrictEqual(expected)
        // Same-named columns stay apart: no payment amount equals its invoice's here.
        const pairs = orm.joinAmounts(actual)
        expect(pairs).toHaveLength(6)
        for (const [invoiceAmount, paymentAmount] of pairs) {
          expect(invoiceAmount).not.toBe(paymentAmount)
          expect(Number(invoiceAmount)).toBeGreaterThan(1000)
        }
      } finally {
        await onRaw.close()
        await raw.end()
      }
    })

    it('one ORM instance serves 200 interleaved requests of several tenants with no cross-tenant row', async () => {
      // Each tenant's first seeded invoice, by its id (unique across tenants).
      const seeded = new Map(
        (await allRows('orm_invoices'))
          .filter((r) => r.number === `${r.tenant_id}-1`)
          .map((r) => [String(r.tenant_id), { id: String(r.id), number: String(r.number) }]),
      )
      const byId = orm.invoiceById?.bind(orm)
      const requests = Array.from({ length: 200 }, (_, i) => {
        const tenant = TENANTS[(i * 7) % TENANTS.length]!
        const other = TENANTS[(i * 7 + 1 + (i % 3)) % TENANTS.length]!
        return as(tenant, async () => {
          // Before any yield, so the 200 lookups are made in one tick (Prisma's dataloader merges them):
          // the tenant's own invoice, and another tenant's by its id.
          const lookups = byId && Promise.all([byId(seeded.get(tenant)!.id), byId(seeded.get(other)!.id)])
          // Yield so requests of all tenants are in flight together.
          await new Promise((resolve) => setImmediate(resolve))
          let rows: Array<{ tenantId: string }> = []
          if (i % 5 === 0) {
            await orm.transaction(async (tx) => {
              rows = await tx.invoices()
            })
          } else {
            rows = await orm.invoices()
          }
          return { tenant, rows, found: await lookups }
        })
      })
      const results = await Promise.all(requests)
      expect(new Set(results.map((r) => r.tenant))).toEqual(new Set(TENANTS))
      for (const { tenant, rows, found } of results) {
        expect(rows.length).toBeGreaterThanOrEqual(3)
        expect(rows.filter((r) => r.tenantId !== tenant)).toEqual([])
        if (byId) {
          // No wrong null for its own invoice, and another tenant's id finds nothing.
          expect(found).toEqual([{ tenantId: tenant, number: seeded.get(tenant)!.number }, null])
        }
      }
    })
  })

  describe(`${fixture.name}: read-your-writes through the lagged replica`, () => {
    let lagged: Keel
    let orm: OrmUnderTest

    beforeAll(async () => {
      lagged = ormKeel({ lagged: true })
      orm = await fixture.open(lagged.pgPool(), (fn) => lagged.run(lagged.tenant('acme'), fn), lagged)
    })
    afterAll(async () => {
      await orm?.close()
      await lagged?.close()
    })

    it("a read after an ORM write sees it, in the session and with the session's token", async () => {
      const db = lagged.tenant('globex')
      const row = invoice('globex', 'ryw')
      await lagged.run(db, () => orm.insertInvoice(row))
      // The ORM's write advanced the session's read-your-writes position.
      expect(db.consistencyToken).toEqual(expect.any(String))
      const inSession = await lagged.run(db, () => orm.invoices())
      expect(inSession.map((r) => r.number)).toContain(row.number)
      const next = lagged.tenant('globex', { consistencyToken: db.consistencyToken })
      const withToken = await lagged.run(next, () => orm.invoices())
      expect(withToken.map((r) => r.number)).toContain(row.number)
    })
  })
}
