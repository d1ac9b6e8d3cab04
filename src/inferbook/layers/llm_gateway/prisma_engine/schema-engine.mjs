#!/usr/bin/env node
// Stand-in for Prisma's schema engine (migrations, introspection), which is another native binary
// from the unreachable Prisma download host. `prisma generate` only asks it for its version, so that
// is all this answers. Everything else (`prisma migrate ...`, `prisma db push`) fails at once with a
// clear message: inferbook applies LiteLLM's migrations itself (inferbook.prisma_offline.apply_migrations).

const ENGINE_COMMIT = '393aa359c9ad4a4bb28630fb5613f9c281cde053';

if (process.argv.includes('--version') || process.argv.includes('-V')) {
  process.stdout.write(`schema-engine-cli ${ENGINE_COMMIT}\n`);
} else {
  process.stderr.write(
    'inferbook schema-engine stub: the Prisma schema engine is not available offline; ' +
      'apply migrations with inferbook.prisma_offline.apply_migrations instead\n',
  );
  process.exit(1);
}
