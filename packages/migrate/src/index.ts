export { type DoctorResult, doctor } from './doctor/doctor.js'
export { DoctorError, type DoctorErrorCode } from './doctor/doctor-error.js'
export type { DoctorOptions, ResolvedPlacement } from './doctor/options.js'
export { type DoctorRule, doctorRules, type Finding, type Severity } from './doctor/rules.js'
