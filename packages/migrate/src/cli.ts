#!/usr/bin/env node
import { Command } from 'commander'
import { registerDoctorCommand } from './cli/doctor-command.js'

// One program; each area registers its commands from src/cli/*-command.ts.
const program = new Command()
program.name('keel').description("keel's owner-side tooling")
registerDoctorCommand(program)
await program.parseAsync(process.argv)
