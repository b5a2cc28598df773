#!/usr/bin/env node
// The command line: the bundle `npm run build` makes (scripts/bundle-cli.mjs) when it is there,
// else the modules tsc built.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/cli/tessera.bundle.js', import.meta.url);
const cli = existsSync(bundle) ? bundle.href : new URL('../dist/cli/main.js', import.meta.url).href;
import(cli).then((m) =>
  m.main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }),
);
