import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { compileBundle, saveUserCache, shippedCachePath, userCacheDir, writeCache } from './code-cache.js';

/**
 * A bundle as scripts/bundle-cli.mjs makes one (CommonJS, exporting main) that answers `answer`;
 * each test's text is its own, so V8's in-process compilation cache never stands in for the code cache.
 */
function writeBundle(dir: string, answer: string, pad = ''): string {
  const file = join(dir, `b-${randomUUID()}.cjs`);
  writeFileSync(
    file,
    `// ${randomUUID()}${pad}
const add = (a, b) => a + b;
module.exports.main = async (argv, io) => { io.out(${JSON.stringify(answer)} + add(1, argv.length)); return 0; };
module.exports.importBeside = (spec) => __tesseraImport(spec);
`,
  );
  return file;
}

async function run(
  bundle: string,
  cacheDir: string,
): Promise<{ out: string[]; cacheUsed: string | undefined }> {
  const compiled = compileBundle(bundle, cacheDir);
  const out: string[] = [];
  await compiled.exports.main(['x'], { out: (l) => out.push(l), err: (l) => out.push(l) });
  saveUserCache(compiled);
  return { out, cacheUsed: compiled.cacheUsed };
}

function onlyFile(dir: string): string {
  const files = readdirSync(dir);
  assert.equal(files.length, 1, `${dir}: ${files.join(', ')}`);
  return join(dir, files[0] as string);
}

describe('the code cache of the command line bundle', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('code-cache-');
  });
  after(() => tmp.cleanup());

  it('a first run writes the user cache and the next runs from it', async () => {
    const cacheDir = join(tmp.path, 'first');
    const bundle = writeBundle(tmp.path, 'one ');
    const first = await run(bundle, cacheDir);
    assert.deepEqual(first, { out: ['one 2'], cacheUsed: undefined });
    const cache = onlyFile(cacheDir);
    assert.equal(
      readdirSync(tmp.path).filter((f) => f.endsWith('.cache')).length,
      0,
      'nothing beside the bundle',
    );
    const second = await run(bundle, cacheDir);
    assert.deepEqual(second, { out: ['one 2'], cacheUsed: cache });
  });

  it('a cache made for another bundle of the same length is not used: the new code runs', async () => {
    const cacheDir = join(tmp.path, 'stale');
    const old = writeBundle(tmp.path, 'old ');
    await run(old, cacheDir);
    const stale = onlyFile(cacheDir);
    // The same length as the old bundle, other code: V8 alone would take the old cache for it.
    const text = readFileSync(old, 'utf8').replace('"old "', '"new "');
    const bundle = join(tmp.path, `b-${randomUUID()}.cjs`);
    writeFileSync(bundle, text);
    writeFileSync(shippedCachePath(bundle), readFileSync(stale));
    const r = await run(bundle, join(tmp.path, 'stale-other'));
    assert.deepEqual(r, { out: ['new 2'], cacheUsed: undefined });
  });

  it('a corrupt, truncated or foreign cache file is ignored, and replaced by a good one', async () => {
    const cacheDir = join(tmp.path, 'corrupt');
    const bundle = writeBundle(tmp.path, 'ok ');
    await run(bundle, cacheDir);
    const cache = onlyFile(cacheDir);
    const good = readFileSync(cache);
    // V8 would abort the process on this one (it checks no checksum of its own).
    const flipped = Buffer.from(good);
    for (let i = 200; i < flipped.length; i += 7) flipped[i] = (flipped[i] as number) ^ 0xff;
    for (const bad of [
      flipped,
      good.subarray(0, good.length - 10),
      Buffer.from('not a cache'),
      Buffer.alloc(0),
    ]) {
      writeFileSync(cache, bad);
      assert.deepEqual(await run(bundle, cacheDir), { out: ['ok 2'], cacheUsed: undefined });
      assert.deepEqual(readFileSync(cache), good, 'rewritten whole');
    }
  });

  it('a user cache file that others can write, or that another user owns, is not used', async (t) => {
    const cacheDir = join(tmp.path, 'perm');
    const bundle = writeBundle(tmp.path, 'mine ');
    await run(bundle, cacheDir);
    const cache = onlyFile(cacheDir);
    chmodSync(cache, 0o666);
    assert.equal((await run(bundle, cacheDir)).cacheUsed, undefined);
    chmodSync(cache, 0o600);
    assert.equal((await run(bundle, cacheDir)).cacheUsed, cache);
    if (process.geteuid?.() !== 0) return t.skip('changing a file owner needs root');
    chownSync(cache, 65534, 65534);
    assert.equal((await run(bundle, cacheDir)).cacheUsed, undefined);
  });

  it('the cache beside the bundle is used when it matches; an unwritable user cache directory is harmless', async () => {
    const bundle = writeBundle(tmp.path, 'shipped ');
    const maker = compileBundle(bundle, join(tmp.path, 'unused'));
    await maker.exports.main([], { out: () => {}, err: () => {} });
    writeCache(shippedCachePath(bundle), maker.cacheData(), 0o644);
    // A directory that cannot be made, even by root: its parent is a file.
    writeFileSync(join(tmp.path, 'a-file'), '');
    const unwritable = join(tmp.path, 'a-file', 'cache');
    assert.deepEqual(await run(bundle, unwritable), {
      out: ['shipped 2'],
      cacheUsed: shippedCachePath(bundle),
    });
    writeFileSync(shippedCachePath(bundle), '');
    assert.deepEqual(await run(bundle, unwritable), { out: ['shipped 2'], cacheUsed: undefined });
  });

  it('the user cache directory is $XDG_CACHE_HOME/tessera when that is absolute, else under the home', () => {
    assert.equal(userCacheDir({ XDG_CACHE_HOME: '/var/cache/me' }), '/var/cache/me/tessera');
    assert.equal(userCacheDir({ XDG_CACHE_HOME: 'relative' }), join(homedir(), '.cache', 'tessera'));
    assert.equal(userCacheDir({}), join(homedir(), '.cache', 'tessera'));
  });

  it("the bundle's import() loads modules beside it", async () => {
    const dir = join(tmp.path, 'beside');
    const bundle = writeBundle(tmp.path, '');
    writeFileSync(join(tmp.path, 'daemon.mjs'), 'export const name = "daemon";\n');
    const compiled = compileBundle(bundle, dir);
    const m = (await (
      compiled.exports as unknown as { importBeside(s: string): Promise<{ name: string }> }
    ).importBeside('./daemon.mjs')) as { name: string };
    assert.equal(m.name, 'daemon');
  });

  it('the command line runs from the cache that npm run build made beside its bundle, and writes nothing', async () => {
    const bundle = fileURLToPath(new URL('./tessera.bundle.cjs', import.meta.url));
    assert.ok(existsSync(bundle), `no ${bundle}: run npm run build (scripts/bundle-cli.mjs makes it)`);
    const cacheHome = join(tmp.path, 'xdg');
    const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));
    const r = await new Promise<{ code: number | null; stdout: string }>((resolve) =>
      execFile(
        process.execPath,
        [bin, '--version'],
        { env: { ...process.env, XDG_CACHE_HOME: cacheHome } },
        (err, stdout) => resolve({ code: err === null ? 0 : 1, stdout }),
      ),
    );
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^tessera \d+\.\d+\.\d+/);
    assert.equal(existsSync(cacheHome), false, 'the shipped cache was used, so no user cache was written');
  });
});
