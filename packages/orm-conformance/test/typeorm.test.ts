import { typeormFixture } from '../src/orms/typeorm.js'
import { ormSuite } from '../src/suite/orm-suite.js'

ormSuite(typeormFixture)
