// The command line's bundle (scripts/bundle-cli.mjs: one CommonJS file) compiled through a V8 code
// cache: V8 then deserializes the bytecode a previous run compiled instead of parsing and compiling
// about a megabyte of JavaScript (gRPC, protobuf) on every command — the biggest share of what a
// short admin command cost (bench/cli.bench.ts). Node 20 has no module compile cache of its own
// (module.enableCompileCache is Node 22), so the bundle is compiled here with vm.Script's cachedData.
//
// Where the cache comes from, first found first used:
//   1. the user's cache directory ($XDG_CACHE_HOME/tessera, else ~/.cache/tessera), written by the
//      first run that found no cache it could use, owned by the user and read only if so;
//   2. beside the bundle (dist/cli/tessera.bundle.cache), made by `npm run build` and shipped.
// A cache file records what it was made for — the Node version, architecture and flags and the
// SHA-256 of the bundle — and the SHA-256 of its V8 data: V8 itself checks only its version, its
// flags and the source's length, and dies on a corrupt cache instead of refusing it. A cache that
// does not match, cannot be read or that V8 refuses is ignored; the bundle then compiles as without
// one. Nothing is ever written beside the bundle at run time, and a cache that cannot be written is
// skipped silently: an install directory or a home directory that is read-only costs speed, nothing else.
import { createHash } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Script } from 'node:vm';

/** Starts every cache file; the trailing digit is the layout's version. */
const MAGIC = Buffer.from('tessera-v8cache1');
const HASH_BYTES = 32;
const HEADER_BYTES = MAGIC.length + 2 * HASH_BYTES;

/** What a cache is valid for besides its V8 data: this process's Node, its flags, and the bundle's text. */
function cacheKey(source: Buffer): Buffer {
  return createHash('sha256')
    .update(
      [process.version, process.arch, process.execArgv.join(' '), process.env.NODE_OPTIONS ?? ''].join('\0'),
    )
    .update('\0')
    .update(source)
    .digest();
}

/** The V8 data of `file` when it is a cache for `key` and intact; else undefined. `ownedOnly`: only a file this user owns. */
function readCache(file: string, key: Buffer, ownedOnly: boolean): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    if (ownedOnly) {
      const st = fstatSync(fd);
      // Code another user could have written would run as this one.
      if (st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) return undefined;
    }
    const data = readFileSync(fd);
    if (data.length <= HEADER_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
    if (!data.subarray(MAGIC.length, MAGIC.length + HASH_BYTES).equals(key)) return undefined;
    const payload = data.subarray(HEADER_BYTES);
    const sum = createHash('sha256').update(payload).digest();
    return sum.equals(data.subarray(MAGIC.length + HASH_BYTES, HEADER_BYTES)) ? payload : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** The user's cache directory for the command line, by the XDG convention; undefined when there is no home to put it in. */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.XDG_CACHE_HOME !== undefined && isAbsolute(env.XDG_CACHE_HOME))
    return join(env.XDG_CACHE_HOME, 'tessera');
  try {
    const home = homedir();
    return isAbsolute(home) ? join(home, '.cache', 'tessera') : undefined;
  } catch {
    return undefined;
  }
}

/** The shipped cache's path for a bundle: beside it, `.cjs` → `.cache`. */
export function shippedCachePath(bundle: string): string {
  return bundle.replace(/\.cjs$/, '.cache');
}

/** What the bundle exports: the command line's main. */
export interface BundleExports {
  main(argv: string[], io?: { out(line: string): void; err(line: string): void }): Promise<number>;
}

export interface CompiledBundle {
  readonly exports: BundleExports;
  /** The cache file the bundle was compiled from, or undefined when it was compiled without one. */
  readonly cacheUsed: string | undefined;
  /** A cache file's contents for this bundle as compiled so far (run it first: V8 then includes what ran). */
  cacheData(): Buffer;
  /** The cache file in the user's cache directory, if there is one. */
  readonly userCache: string | undefined;
}

/**
 * Compiles and runs the bundle's top level (a CommonJS module) with the first usable cache, then
 * returns its exports. `cacheDir`: the user cache directory (tests point it elsewhere).
 */
export function compileBundle(bundle: string, cacheDir: string | undefined = userCacheDir()): CompiledBundle {
  const source = readFileSync(bundle);
  const key = cacheKey(source);
  const userCache =
    cacheDir === undefined ? undefined : join(cacheDir, `cli-${key.toString('hex').slice(0, 32)}.v8`);
  const candidates: [string, boolean][] = [
    ...(userCache === undefined ? [] : [[userCache, true] as [string, boolean]]),
    [shippedCachePath(bundle), false],
  ];
  let cacheUsed: string | undefined;
  let cachedData: Buffer | undefined;
  for (const [file, ownedOnly] of candidates) {
    cachedData = readCache(file, key, ownedOnly);
    if (cachedData !== undefined) {
      cacheUsed = file;
      break;
    }
  }
  const bundleUrl = pathToFileURL(bundle);
  // The bundle is ASCII (scripts/bundle-cli.mjs checks), so latin1 is its text, decoded fastest.
  // A CommonJS module's wrapper, and __tesseraImport: the bundle's import() of the daemons' modules
  // (scripts/bundle-cli.mjs renames them), which a vm.Script cannot do itself on Node 20 without
  // --experimental-vm-modules.
  const script = new Script(
    `(function (exports, require, module, __filename, __dirname, __tesseraImport) {${source.toString('latin1')}\n})`,
    { filename: bundle, ...(cachedData === undefined ? {} : { cachedData }) },
  );
  if (script.cachedDataRejected === true) cacheUsed = undefined;
  const module = { exports: {} as BundleExports };
  const importBeside = (specifier: string): Promise<unknown> => import(new URL(specifier, bundleUrl).href);
  (script.runInThisContext() as (...args: unknown[]) => void).call(
    module.exports,
    module.exports,
    createRequire(bundle),
    module,
    bundle,
    dirname(bundle),
    importBeside,
  );
  return {
    exports: module.exports,
    cacheUsed,
    userCache,
    cacheData: () => {
      const payload = script.createCachedData();
      return Buffer.concat([MAGIC, key, createHash('sha256').update(payload).digest(), payload]);
    },
  };
}

/**
 * Writes a cache file whole (a temporary file renamed over it), so a reader never sees half of one;
 * `mode` 0o600 for the user's, 0o644 for the one that ships.
 */
export function writeCache(file: string, data: Buffer, mode = 0o600): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data, { mode });
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * After a run that used no cache: writes one to the user's cache directory and removes those made
 * for other bundles or Nodes (an upgrade's); any failure is ignored.
 */
export function saveUserCache(compiled: CompiledBundle): void {
  const file = compiled.userCache;
  if (compiled.cacheUsed !== undefined || file === undefined) return;
  try {
    writeCache(file, compiled.cacheData());
    const dir = dirname(file);
    for (const name of readdirSync(dir))
      if (/^cli-[0-9a-f]+\.v8$/.test(name) && join(dir, name) !== file)
        rmSync(join(dir, name), { force: true });
  } catch {
    // Unwritable or absent: the next run compiles without a cache, as this one did.
  }
}
