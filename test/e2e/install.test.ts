// Installing as a user does, on a machine with no clone: both packages packed by `npm pack`, the
// tarballs installed with `npm install` into an empty project (their dependencies from the
// registry), then used from there — the library by import and by its types, the CLI through the
// bin npm installed. The tarballs are also read file by file: every import of every shipped module
// must resolve inside the tarball or to a declared dependency, so a file left out of `files` fails
// here even where no command below happens to load it.
//
// Install scripts are skipped (--ignore-scripts): better-sqlite3 has no prebuilt binary reachable
// here and compiles for ~2-3 min on 2 cores, and nothing checked here opens a database. With
// TESSERA_INSTALL_SCRIPTS=1 they run, and the driver's native module must load.
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { type RunResult, runCommand } from './tessera-process.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PACKAGES = ['spiffe', 'tessera'] as const;
const RUN_SCRIPTS = process.env.TESSERA_INSTALL_SCRIPTS === '1';

interface PackageJson {
  name: string;
  version: string;
  license?: string;
  engines?: { node?: string };
  bin?: Record<string, string>;
  exports?: Record<string, { types?: string; default?: string } | string>;
  files?: string[];
  publishConfig?: { access?: string };
  private?: boolean;
  dependencies?: Record<string, string>;
}

interface Packed {
  name: string;
  version: string;
  filename: string;
  files: { path: string }[];
}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

async function ok(command: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<RunResult> {
  const r = await runCommand(command, args, { cwd, timeoutMs });
  assert.equal(
    r.code,
    0,
    `${command} ${args.join(' ')} (in ${cwd}) exited ${r.code}:\n${r.stdout}\n${r.stderr}`,
  );
  return r;
}

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

/** The module specifiers a compiled module loads: static and dynamic imports, workers, createRequire. */
function specifiers(source: string): string[] {
  const patterns = [
    /\b(?:import|export)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
    /new URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g,
    /\(\s*import\.meta\.url\s*\)\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  return patterns.flatMap((re) => [...source.matchAll(re)].map((m) => m[1] as string));
}

/** The package a bare specifier names: `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
function packageOf(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] as string);
}

/**
 * Whether `version` satisfies an `engines` range, for the forms packages use (`>=20`, `^18 || >=20`,
 * `>= 10.16.0`, `14.x`, `*`); anything else is an error, so an unread range never passes silently.
 */
function satisfies(version: string, range: string): boolean {
  const v = version.replace(/^v/, '').split('.').map(Number);
  const cmp = (a: number[], b: number[]) => {
    for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  };
  return range.split('||').some((alt) => {
    const comparators = alt
      .trim()
      .replace(/([<>=^~]+)\s+/g, '$1')
      .split(/\s+/)
      .filter(Boolean);
    return comparators.every((c) => {
      const m = c.match(/^(>=|<=|>|<|=|\^|~)?v?((?:\d+|[xX*])(?:\.(?:\d+|[xX*])){0,2})$/);
      if (m === null) throw new Error(`engines range "${range}": cannot read "${c}"`);
      const op = m[1] ?? '';
      const parts = (m[2] as string).split('.').filter((p) => /^\d+$/.test(p));
      const w = parts.map(Number);
      if (parts.length === 0) return true;
      const upper = (i: number) => [...w.slice(0, i), (w[i] ?? 0) + 1];
      switch (op) {
        case '>=':
          return cmp(v, w) >= 0;
        case '>':
          return cmp(v, w) > 0;
        case '<=':
          return cmp(v, w) <= 0;
        case '<':
          return cmp(v, w) < 0;
        case '^':
          return (
            cmp(v, w) >= 0 &&
            cmp(
              v,
              upper(
                Math.max(
                  0,
                  w.findIndex((n) => n !== 0),
                ),
              ),
            ) < 0
          );
        case '~':
          return cmp(v, w) >= 0 && cmp(v, upper(Math.min(1, w.length - 1))) < 0;
        default:
          return cmp(v, w) >= 0 && cmp(v, upper(w.length - 1)) < 0;
      }
    });
  });
}

describe('installing the packed packages into an empty project', { timeout: 600_000 }, () => {
  let tmp: TempDir;
  let app: string;
  const packed = new Map<string, Packed>();
  let install: RunResult;

  before(async () => {
    tmp = await makeTempDir('install-');
    const tarballs = join(tmp.path, 'tarballs');
    app = join(tmp.path, 'app');
    mkdirSync(tarballs);
    mkdirSync(app);
    const pack = await ok(
      'npm',
      ['pack', '--json', '--pack-destination', tarballs, ...PACKAGES.flatMap((p) => ['-w', `packages/${p}`])],
      ROOT,
    );
    for (const p of JSON.parse(pack.stdout) as Packed[]) packed.set(p.name, p);
    writeFileSync(
      join(app, 'package.json'),
      `${JSON.stringify({ name: 'app', private: true, type: 'module' })}\n`,
    );
    install = await ok(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        ...(RUN_SCRIPTS ? [] : ['--ignore-scripts']),
        ...[...packed.values()].map((p) => join(tarballs, p.filename)),
      ],
      app,
      RUN_SCRIPTS ? 590_000 : 240_000,
    );
  });
  after(() => tmp?.cleanup());

  it('both package.json files are publishable: scoped, public, licensed, Node >= 20, tessera on the library by its version', () => {
    const spiffe = readJson<PackageJson>(join(ROOT, 'packages/spiffe/package.json'));
    const tessera = readJson<PackageJson>(join(ROOT, 'packages/tessera/package.json'));
    assert.deepEqual([...packed.keys()].sort(), ['@tessera/spiffe', '@tessera/tessera']);
    for (const p of [spiffe, tessera]) {
      assert.equal(p.private, undefined, `${p.name} is private`);
      assert.equal(
        p.publishConfig?.access,
        'public',
        `${p.name}: a scoped package is private unless access is public`,
      );
      assert.equal(p.license, 'Apache-2.0');
      assert.match(p.engines?.node ?? '', /^>=20(\.\d+)*$/);
      assert.ok(p.files !== undefined && p.files.length > 0, `${p.name} has no files list`);
    }
    assert.equal(tessera.dependencies?.['@tessera/spiffe'], spiffe.version);
    assert.deepEqual(tessera.bin, { tessera: './bin/tessera.js' });
  });

  it('the tarballs hold the modules, their types, the bin, docs and LICENSE, and nothing of the tests', () => {
    for (const p of packed.values()) {
      const files = p.files.map((f) => f.path);
      const stray = files.filter(
        (f) =>
          /\.test[.-]/.test(f) ||
          /(^|\/)test-[^/]*$/.test(f) ||
          f.endsWith('.tsbuildinfo') ||
          f.endsWith('.map') ||
          (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
          f.startsWith('src/'),
      );
      assert.deepEqual(stray, [], `${p.name} ships files that are not for users`);
      for (const f of ['package.json', 'README.md', 'LICENSE'])
        assert.ok(files.includes(f), `${p.name} lacks ${f}`);
      assert.ok(
        files.some((f) => f.startsWith('docs/')),
        `${p.name} lacks docs/ (the README links there)`,
      );
    }
    const spiffe = packed.get('@tessera/spiffe')?.files.map((f) => f.path) ?? [];
    assert.ok(spiffe.includes('dist/index.d.ts') && spiffe.includes('dist/gen/workload/workload_pb.js'));
    const tessera = packed.get('@tessera/tessera')?.files.map((f) => f.path) ?? [];
    assert.ok(tessera.includes('bin/tessera.js') && tessera.includes('dist/cli/main.js'));
    // The command line's bundle and its code cache (npm run build), which dist/cli/launch.js loads by
    // computed paths, so no import names them: without them the CLI silently falls back to slower ways.
    if (existsSync(join(ROOT, 'packages/tessera/dist/cli/tessera.bundle.cjs')))
      for (const f of ['dist/cli/tessera.bundle.cjs', 'dist/cli/tessera.bundle.cache'])
        assert.ok(tessera.includes(f), `@tessera/tessera lacks ${f}`);
  });

  it('every import of every shipped module resolves inside its package or to a declared dependency', () => {
    const builtins = new Set(builtinModules);
    for (const name of packed.keys()) {
      const dir = join(app, 'node_modules', name);
      const pkg = readJson<PackageJson>(join(dir, 'package.json'));
      const declared = new Set(Object.keys(pkg.dependencies ?? {}));
      const used = new Set<string>();
      const problems: string[] = [];
      for (const file of walk(dir).filter((f) => f.endsWith('.js'))) {
        for (const spec of specifiers(readFileSync(file, 'utf8'))) {
          const where = relative(dir, file);
          if (spec.startsWith('.')) {
            const target = resolve(dirname(file), spec);
            if (!statSync(target, { throwIfNoEntry: false })?.isFile())
              problems.push(`${where}: '${spec}' is not in the tarball (files in package.json)`);
          } else if (spec.startsWith('node:') || builtins.has(spec)) {
            // Node's own
          } else if (declared.has(packageOf(spec))) used.add(packageOf(spec));
          else problems.push(`${where}: '${spec}' is not a dependency of ${name}`);
        }
      }
      for (const [sub, target] of Object.entries(pkg.exports ?? {}))
        for (const path of typeof target === 'string' ? [target] : Object.values(target))
          if (!statSync(join(dir, path), { throwIfNoEntry: false })?.isFile())
            problems.push(`exports["${sub}"]: ${path} is not in the tarball`);
      for (const path of Object.values(pkg.bin ?? {}))
        if (!statSync(join(dir, path), { throwIfNoEntry: false })?.isFile())
          problems.push(`bin: ${path} is not in the tarball`);
      const unused = [...declared].filter((d) => !used.has(d));
      if (unused.length > 0) problems.push(`dependencies no shipped module loads: ${unused.join(', ')}`);
      assert.deepEqual(problems, [], name);
    }
  });

  it('a program imports the library, parses a SPIFFE ID and fetches bundles with a Workload API client', async () => {
    writeFileSync(
      join(app, 'main.mjs'),
      `import { generateKeyPairSync } from 'node:crypto';
import { createWorkloadApiClient, parseJwtBundle, parseSpiffeId } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';

const id = parseSpiffeId('spiffe://example.org/billing/api');
const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const bundle = parseJwtBundle(id.trustDomain, { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1' }] });
const api = await FakeWorkloadApi.start();
api.setJwtBundles([bundle]);
const client = createWorkloadApiClient({ address: api.address });
try {
  const bundles = await client.fetchJwtBundles();
  const got = bundles.get(id.trustDomain);
  console.log(JSON.stringify({ id: id.toString(), path: id.path, trustDomain: id.trustDomain.toString(), kid: got?.hasJwtAuthority('k1') }));
} finally {
  client.close();
  await api.stop();
}
`,
    );
    const r = await ok(process.execPath, ['main.mjs'], app, 30_000);
    assert.deepEqual(JSON.parse(r.stdout), {
      id: 'spiffe://example.org/billing/api',
      path: '/billing/api',
      trustDomain: 'example.org',
      kid: true,
    });
    const bad = await runCommand(process.execPath, ['-e', "import('@tessera/spiffe/dist/index.js')"], {
      cwd: app,
    });
    assert.match(bad.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/, 'only the exports map is public');
  });

  it("the library's types resolve through its exports (tsc, module NodeNext, strict)", async () => {
    writeFileSync(
      join(app, 'check.ts'),
      `import { createWorkloadApiClient, parseSpiffeId, type SpiffeId, type WorkloadApiClient } from '@tessera/spiffe';
import { FakeWorkloadApi } from '@tessera/spiffe/testing';
import * as wire from '@tessera/spiffe/wire';

export const id: SpiffeId = parseSpiffeId('spiffe://example.org/a');
export const client: WorkloadApiClient = createWorkloadApiClient({ address: 'unix:///run/none.sock' });
export const api: Promise<FakeWorkloadApi> = FakeWorkloadApi.start();
export const w: object = wire;
// @ts-expect-error a number is no SPIFFE ID: the types are real, not any
parseSpiffeId(42);
`,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
        },
        files: ['check.ts'],
      }),
    );
    await ok(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'],
      app,
      60_000,
    );
  });

  it('the installed tessera bin runs: npx tessera --version, tessera server validate --config …', async () => {
    const version = readJson<PackageJson>(join(ROOT, 'packages/tessera/package.json')).version;
    assert.equal(
      (await ok('npx', ['--no-install', 'tessera', '--version'], app, 30_000)).stdout,
      `tessera ${version}\n`,
    );

    const bin = join(app, 'node_modules/.bin/tessera');
    writeFileSync(join(app, 'server.yaml'), `trust_domain: example.org\ndata_dir: ${join(app, 'data')}\n`);
    const valid = await ok(bin, ['server', 'validate', '--config', 'server.yaml'], app, 30_000);
    assert.match(
      valid.stdout,
      /^server\.yaml: configuration OK \(trust domain example\.org, datastore sqlite/,
    );

    writeFileSync(join(app, 'bad.yaml'), 'trust_domain: Example.org\n');
    const invalid = await runCommand(bin, ['server', 'validate', '--config', 'bad.yaml'], { cwd: app });
    assert.equal(invalid.code, 1, invalid.stderr);
    assert.match(invalid.stderr, /trust_domain/);
    assert.doesNotMatch(invalid.stderr, /\n\s+at /, 'no stack trace');

    const help = await ok(bin, ['--help'], app, 30_000);
    assert.match(help.stdout, /^usage: tessera <command>/);

    // The command line runs from the code cache that shipped in the tarball: a run that found none
    // it could use would write one to the user's cache directory.
    const cacheHome = join(tmp.path, 'xdg');
    const cached = await runCommand(bin, ['--version'], {
      cwd: app,
      env: { ...process.env, XDG_CACHE_HOME: cacheHome },
    });
    assert.equal(cached.code, 0, cached.stderr);
    assert.equal(existsSync(cacheHome), false, 'the shipped code cache was not used');

    // Only when the install scripts ran (TESSERA_INSTALL_SCRIPTS=1): the SQLite driver's native module.
    if (RUN_SCRIPTS)
      await ok(
        process.execPath,
        ['-e', "import('better-sqlite3').then((m) => new m.default(':memory:').close())"],
        app,
      );
  });

  it('the installed tessera bin runs for a user who can write neither the install directory nor a home', async (t) => {
    if (process.geteuid?.() !== 0) return t.skip('running as another user needs root');
    // The test's directories are the owner's alone; the other user needs to reach the install.
    for (const d of [tmp.path, app]) chmodSync(d, 0o755);
    const installed = join(app, 'node_modules/@tessera/tessera');
    const before = walk(installed).sort();
    const env = { PATH: process.env.PATH, HOME: '/nonexistent' };
    const bin = join(app, 'node_modules/.bin/tessera');
    const version = await runCommand(bin, ['--version'], { cwd: '/', env, uid: 65534 });
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^tessera \d/);
    const count = await runCommand(bin, ['entry', 'count', '--socket', join(app, 'none.sock')], {
      cwd: '/',
      env,
      uid: 65534,
    });
    assert.equal(count.code, 1);
    assert.match(
      count.stderr,
      /^tessera entry count: cannot connect to the server at .*none\.sock: is it running\?\n$/,
    );
    assert.deepEqual(walk(installed).sort(), before, 'the command line wrote into its install directory');
  });

  it('npm install printed no EBADENGINE, and no package in the workspace lock needs a newer Node', () => {
    assert.doesNotMatch(install.stderr, /EBADENGINE/);
    const lock = readJson<{
      packages: Record<string, { engines?: { node?: string } | string[]; dev?: boolean }>;
    }>(join(ROOT, 'package-lock.json'));
    const needNewer = Object.entries(lock.packages)
      .filter(([, p]) => p.engines !== undefined && !Array.isArray(p.engines) && p.engines.node !== undefined)
      .filter(([, p]) => !satisfies(process.version, (p.engines as { node: string }).node))
      .map(([path, p]) => `${path} (node ${(p.engines as { node: string }).node})`);
    assert.deepEqual(needNewer, [], `npm ci on Node ${process.version} warns EBADENGINE for these`);
  });
});
