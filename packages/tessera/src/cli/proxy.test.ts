// `tessera proxy validate` and the start-up errors of `tessera proxy run`, through the CLI entry point.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { tessera } from './main.test.util.js';

const POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  rules:
  - from: [{source: {principals: ["spiffe://example.org/vm/catalog-client"]}}]
    to: [{operation: {methods: ["GET"]}}]
`;

describe('tessera proxy', () => {
  let tmp: TempDir;
  let policies: string;
  const config = (name: string, text: string) => {
    writeFileSync(join(tmp.path, name), text);
    return join(tmp.path, name);
  };

  before(async () => {
    tmp = await makeTempDir('proxy-cli-');
    policies = join(tmp.path, 'policies');
    mkdirSync(policies);
    writeFileSync(join(policies, 'allow.yaml'), POLICY);
  });
  after(() => tmp.cleanup());

  it('validate: a good configuration and its policies; warnings for HTTP-only fields on a TCP listener', async () => {
    const file = config(
      'good.yaml',
      `namespace: sock-shop\nlabels: {app: catalogue}\npolicies: [${policies}]\ninbound:\n  - {listen: "127.0.0.1:8443", upstream: "127.0.0.1:8080", protocol: tcp}\n`,
    );
    const r = await tessera('proxy', 'validate', '--config', file);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${file}: valid; 1 policy loaded\n`);
    assert.match(r.stderr, /^warning: .*allow\.yaml:\d+: sock-shop\/allow-client: .*methods/m);
  });

  it('validate: a policy that does not load names the file, line and field; exit 1', async () => {
    const bad = join(tmp.path, 'bad-policies');
    mkdirSync(bad);
    writeFileSync(join(bad, 'p.yaml'), POLICY.replace('rules:', 'action: CUSTOM\n  rules:'));
    const file = config(
      'bad-policy.yaml',
      `policies: [${bad}]\ninbound:\n  - {listen: "127.0.0.1:8443", upstream: "127.0.0.1:8080"}\n`,
    );
    const r = await tessera('proxy', 'validate', '--config', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /p\.yaml:\d+: .*CUSTOM/);
  });

  it('validate and run: a bad configuration is every problem with its line, exit 1; usage errors exit 2', async () => {
    const file = config(
      'bad.yaml',
      'inbound:\n  - {listen: "127.0.0.1:8443", upstream: "127.0.0.1:8080", colour: red}\n',
    );
    for (const sub of ['validate', 'run']) {
      const r = await tessera('proxy', sub, '--config', file);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /bad\.yaml:2: inbound\[0\]\.colour: unknown key/);
    }
    assert.equal((await tessera('proxy', 'run')).code, 2);
    assert.equal((await tessera('proxy', 'restart', '--config', file)).code, 2);
  });

  it('run: policies that do not load stop the start before anything listens', async () => {
    const bad = join(tmp.path, 'broken');
    mkdirSync(bad);
    writeFileSync(join(bad, 'p.yaml'), POLICY.replace('selector:', 'selectr:'));
    const file = config(
      'run-bad.yaml',
      `workload_api_socket: unix://${join(tmp.path, 'none.sock')}\npolicies: [${bad}]\ninbound:\n  - {listen: "127.0.0.1:8443", upstream: "127.0.0.1:8080"}\nhealth: {port: 0}\n`,
    );
    const r = await tessera('proxy', 'run', '--config', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^tessera proxy: proxy: the policies do not load: .*selectr/s);
  });
});
