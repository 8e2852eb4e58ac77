import { knexFixture } from '../src/orms/knex.js'
import { ormSuite } from '../src/suite/orm-suite.js'

ormSuite(knexFixture)
