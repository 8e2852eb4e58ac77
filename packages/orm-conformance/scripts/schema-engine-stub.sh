#!/bin/sh
# Stands in for Prisma's schema engine, which `prisma generate` checks for but never runs: Prisma 7 reads
# the schema with its WebAssembly engine. Without a path here the CLI downloads the binary from Prisma's
# own host, which CI cannot reach. Migrations (which would need the real engine) are not Prisma's here.
echo "schema-engine stub: Prisma's schema engine is not installed (called with: $*)" >&2
exit 1
