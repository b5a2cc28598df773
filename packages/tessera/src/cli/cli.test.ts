// The CLI as users run it: a real child process, its exit code and what it prints.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir, type TempDir } from '@tessera/testkit';

const bin = fileURLToPath(new URL('../../bin/tessera.js', import.meta.url));

function tessera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}

describe('tessera server validate', () => {
  let tmp: TempDir;
  before(async () => {
    tmp = await makeTempDir('cli-');
  });
  after(() => tmp.cleanup());

  it('accepts a valid file and says what it will run with', async () => {
    const file = join(tmp.path, 'ok.yaml');
    writeFileSync(file, 'trust_domain: example.org\nca: { key_type: ec-p384 }\n');
    const r = await tessera('server', 'validate', '--config', file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /configuration OK \(trust domain example.org, datastore sqlite, CA ec-p384 24h, X509-SVID 1h, JWT-SVID 5m\)/,
    );
  });

  it('refuses a bad file with every problem, its line, and no stack trace', async () => {
    const file = join(tmp.path, 'bad.yaml');
    writeFileSync(file, 'trust_domain: example.org\nx509_svid_ttl: soon\nwhatever: 1\n');
    const r = await tessera('server', 'validate', '--config', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${file}:2: x509_svid_ttl: must be a duration`));
    assert.match(r.stderr, new RegExp(`${file}:3: whatever: unknown key`));
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('a missing file, a missing flag and an unknown command are clear errors', async () => {
    const missing = await tessera('server', 'validate', '--config', join(tmp.path, 'nope.yaml'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope.yaml: cannot read the file: ENOENT/);
    const noFlag = await tessera('server', 'validate');
    assert.equal(noFlag.code, 2);
    assert.match(noFlag.stderr, /--config <file> is required/);
    const unknown = await tessera('server', 'frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const badFlag = await tessera('server', 'validate', '--colour');
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /Unknown option '--colour'/);
  });
});

describe('tessera --help and --version', () => {
  it('every command group and subcommand prints its usage for --help and -h, on stdout, with exit 0', async () => {
    for (const [args, usage] of [
      [['entry', '--help'], 'usage: tessera entry'],
      [['entry', 'create', '--help'], 'usage: tessera entry'],
      [['agent', 'run', '-h'], 'usage: tessera agent'],
      [['server', 'run', '--help'], 'usage: tessera server'],
      [['token', 'generate', '-h'], 'usage: tessera token'],
      [['bundle', '--help'], 'usage: tessera bundle'],
      [['authority', 'taint', '--help'], 'usage: tessera authority'],
      [['api', 'fetch', '--help'], 'usage: tessera api'],
      [['envoy', 'bootstrap', '--help'], 'usage: tessera envoy'],
      [['proxy', 'run', '--help'], 'usage: tessera proxy'],
      [['helper', 'run', '--help'], 'usage: tessera helper'],
      [['policy', 'check', '--help'], 'usage: tessera policy'],
      [['x509', 'mint', '-h'], 'usage: tessera x509'],
      [['jwt', 'mint', '-h'], 'usage: tessera jwt'],
      [['healthcheck', '--help'], 'usage: tessera healthcheck'],
      [['--help'], 'usage: tessera <command>'],
    ] as const) {
      const r = await tessera(...args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(
        r.stdout.startsWith(usage),
        `${args.join(' ')} printed ${JSON.stringify(r.stdout.slice(0, 80))}`,
      );
      assert.equal(r.stderr, '', args.join(' '));
    }
  });

  it('--version prints the version', async () => {
    const r = await tessera('--version');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^tessera \S+\n$/);
  });
});
