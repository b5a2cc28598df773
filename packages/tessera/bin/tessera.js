#!/usr/bin/env node
// The command line: dist/cli/launch.js runs the bundle `npm run build` makes, else the modules tsc built.
import { launch } from '../dist/cli/launch.js';

launch(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
