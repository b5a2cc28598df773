import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../common/config-schema.js';
import { parseHelperConfig, splitArgs } from './config.js';

const problems = (yaml: string) => {
  try {
    parseHelperConfig(yaml);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.line ?? '-'} ${p.path}: ${p.message}`);
  }
  assert.fail('expected a ConfigError');
};

test("spiffe-helper's keys, with spiffe-helper's defaults", () => {
  const c = parseHelperConfig(
    [
      'agent_address: /run/spire/agent.sock',
      'cert_dir: /etc/certs',
      'svid_file_name: svid.pem',
      'svid_key_file_name: svid_key.pem',
      'svid_bundle_file_name: svid_bundle.pem',
      'jwt_svids:',
      '  - { jwt_audience: db, jwt_extra_audiences: [x, y], jwt_svid_file_name: db.token }',
      'jwt_bundle_file_name: bundle.json',
      'renew_signal: SIGHUP',
      'pid_file_name: /run/nginx.pid',
      'cert_file_mode: 0444',
      'key_file_mode: "0640"',
      'jwt_svid_file_mode: 0o400',
      'health_checks: { listener_enabled: true }',
    ].join('\n'),
  );
  assert.equal(c.daemon_mode, true);
  assert.equal(c.cert_file_mode, 0o444);
  assert.equal(c.key_file_mode, 0o640);
  assert.equal(c.jwt_svid_file_mode, 0o400);
  assert.equal(c.jwt_bundle_file_mode, 0o600);
  assert.deepEqual(c.jwt_svids[0]?.jwt_extra_audiences, ['x', 'y']);
  assert.deepEqual(c.health_checks, {
    listener_enabled: true,
    bind_address: '127.0.0.1',
    bind_port: 8081,
    liveness_path: '/live',
    readiness_path: '/ready',
  });
  assert.ok(Object.isFrozen(c));
});

test('every problem at once, each with its key and line; a misspelt key gets "did you mean"', () => {
  const got = problems(
    [
      'cert_dir: /tmp',
      'svid_file_name: svid.pem',
      'svid_key_filename: key.pem',
      'renew_signal: HUP',
      'key_file_mode: 0689',
      'jwt_svids: [{ jwt_audience: a, jwt_svid_filename: t }]',
    ].join('\n'),
  );
  assert.equal(got.length, 5, got.join('\n'));
  assert.match(got[0] ?? '', /^3 svid_key_filename: unknown key; did you mean svid_key_file_name\?/);
  assert.match(got[1] ?? '', /^4 renew_signal: must be a signal name such as SIGHUP/);
  assert.match(got[2] ?? '', /^5 key_file_mode: must be an octal file mode such as 0644/);
  assert.match(
    got[3] ?? '',
    /^6 jwt_svids\[0\]\.jwt_svid_filename: unknown key; did you mean jwt_svid_file_name\?/,
  );
  assert.match(got[4] ?? '', /jwt_svids\[0\]\.jwt_svid_file_name: is required/);
});

test('keys that go together, and one-shot mode without reloaders', () => {
  const got = problems(
    [
      'cert_dir: /tmp',
      'daemon_mode: false',
      'svid_file_name: a.pem',
      'svid_combined_file_name: a.pem',
      'pid_file_name: /run/x.pid',
      "cmd_args: '-c \"unclosed'",
    ].join('\n'),
  );
  const text = got.join('\n');
  assert.match(text, /svid_key_file_name: is required with svid_file_name/);
  assert.match(text, /svid_bundle_file_name: is required with svid_file_name/);
  assert.match(text, /pid_file_name: needs renew_signal/);
  assert.match(text, /pid_file_name: applies only in daemon mode/);
  assert.match(text, /cmd_args: has a double quote that is not closed/);
  assert.match(text, /svid_combined_file_name: names the same file as svid_file_name/);
  assert.match(problems('cert_dir: /tmp\n').join('\n'), /writes nothing/);
  assert.match(
    problems('cert_dir: /tmp\njwt_bundle_file_name: ../b.json\n').join('\n'),
    /must name a file inside cert_dir/,
  );
});

test('cmd_args split as spiffe-helper splits them', () => {
  assert.deepEqual(splitArgs(''), []);
  assert.deepEqual(splitArgs('-p  /tmp/x -c "a b" ""'), ['-p', '/tmp/x', '-c', 'a b', '']);
  assert.deepEqual(splitArgs('"say ""hi"""'), ['say "hi"']);
  assert.equal(splitArgs('"open'), undefined);
});
