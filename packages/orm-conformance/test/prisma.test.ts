import { prismaFixture } from '../src/orms/prisma.js'
import { ormSuite } from '../src/suite/orm-suite.js'

ormSuite(prismaFixture)
