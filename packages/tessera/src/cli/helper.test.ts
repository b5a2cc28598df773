// `tessera helper validate` and the usage errors of `tessera helper`, through the CLI entry point.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { tessera } from './main.test.util.js';

describe('tessera helper', () => {
  let tmp: TempDir;
  const config = (name: string, text: string) => {
    writeFileSync(join(tmp.path, name), text);
    return join(tmp.path, name);
  };
  before(async () => {
    tmp = await makeTempDir('helper-cli-');
  });
  after(() => tmp.cleanup());

  it('validate: prints each file with its path and mode, and how the program is reloaded', async () => {
    const file = config(
      'good.yaml',
      [
        'agent_address: /run/spire/agent.sock',
        `cert_dir: ${tmp.path}`,
        'svid_file_name: svid.pem',
        'svid_key_file_name: svid_key.pem',
        'svid_bundle_file_name: svid_bundle.pem',
        'renew_signal: SIGHUP',
        'pid_file_name: /run/nginx.pid',
        'cert_file_mode: 0444',
      ].join('\n'),
    );
    const r = await tessera('helper', 'validate', '--config', file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${file}: valid\n`));
    assert.match(r.stdout, /agent_address +unix:\/\/\/run\/spire\/agent\.sock/);
    assert.ok(r.stdout.includes(`svid_key_file_name     ${join(tmp.path, 'svid_key.pem')} (0600)`), r.stdout);
    assert.ok(r.stdout.includes(`svid_file_name         ${join(tmp.path, 'svid.pem')} (0444)`), r.stdout);
    assert.match(r.stdout, /reload +SIGHUP to the pid in \/run\/nginx\.pid/);
  });

  it('a bad configuration is every problem with its line, exit 1; usage errors exit 2', async () => {
    const file = config('bad.yaml', `cert_dir: ${tmp.path}\nsvid_file_name: a.pem\nrenew_signal: USR1\n`);
    const r = await tessera('helper', 'run', '--config', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.yaml:3: renew_signal: must be a signal name such as SIGHUP/);
    assert.equal((await tessera('helper', 'run')).code, 2);
    assert.equal((await tessera('helper', 'start', '--config', file)).code, 2);
  });
});
