import { kyselyFixture } from '../src/orms/kysely.js'
import { ormSuite } from '../src/suite/orm-suite.js'

ormSuite(kyselyFixture)
