// What bin/tessera.js runs: the command line's bundle (scripts/bundle-cli.mjs) compiled through its
// code cache (code-cache.ts) when `npm run build` made one, else the modules tsc built.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileBundle, saveUserCache } from './code-cache.js';

/** Runs the command line on `argv`; resolves to the exit code. */
export async function launch(argv: string[]): Promise<number> {
  const bundle = fileURLToPath(new URL('./tessera.bundle.cjs', import.meta.url));
  if (!existsSync(bundle)) return (await import('./main.js')).main(argv);
  const compiled = compileBundle(bundle);
  const code = await compiled.exports.main(argv);
  saveUserCache(compiled);
  return code;
}
