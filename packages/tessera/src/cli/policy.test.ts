// `tessera policy check|lint` as users run it: the decision printed (text and JSON), exit 0 for either
// decision, 2 for bad flags, 1 for policies that do not load, every problem on its own line.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { tessera } from './main.test.util.js';

const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: catalogue-allow-vm, namespace: sock-shop}
spec:
  selector: {matchLabels: {app: catalogue}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://example.org/vm/catalog-client"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/catalogue", "/catalogue/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: sock-shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
    when:
    - key: request.headers[x-admin-token]
      notValues: ["s3cret"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: istio-system}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
`;

const CLIENT = 'spiffe://example.org/vm/catalog-client';

describe('tessera policy', () => {
  let tmp: TempDir;
  let dir: string;
  let bad: string;
  before(async () => {
    tmp = await makeTempDir('tessera-cli-policy-');
    dir = join(tmp.path, 'policies');
    mkdirSync(dir);
    writeFileSync(join(dir, 'catalogue.yaml'), POLICIES);
    bad = join(tmp.path, 'bad.yaml');
    writeFileSync(
      bad,
      'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: sock-shop}\nspec:\n  action: CUSTOM\n  rules:\n  - from: [{source: {ipBlocks: ["10.0.0.0/33"]}}]\n',
    );
  });
  after(() => tmp.cleanup());

  const check = (...args: string[]) =>
    tessera(
      'policy',
      'check',
      '--policy',
      dir,
      '--namespace',
      'sock-shop',
      '--labels',
      'app=catalogue,version=v1',
      ...args,
    );

  it('check: ALLOW, with the policy and rule that decided, where they are, the AUDIT policies, and warnings on stderr', async () => {
    const r = await check(
      '--principal',
      CLIENT,
      '--method',
      'GET',
      '--path',
      '/catalogue/42?x=1',
      '--port',
      '8080',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trimEnd().split('\n'), [
      'ALLOW',
      'reason:     allowed by ALLOW policy sock-shop/catalogue-allow-vm rule 0',
      `decided by: sock-shop/catalogue-allow-vm (ALLOW) rule 0 at ${dir}/catalogue.yaml:8`,
      `audited:    istio-system/audit-all (AUDIT) rule 0 at ${dir}/catalogue.yaml:27`,
      `request:    HTTP GET /catalogue/42?x=1, port 8080, from ${CLIENT}`,
      'workload:   sock-shop {app=catalogue,version=v1}: 3 of 3 policies apply (1 ALLOW, 1 DENY, 1 AUDIT)',
    ]);
    assert.equal(
      r.stderr,
      `warning: ${dir}/catalogue.yaml:30: skipped a Gateway (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read\n`,
    );
  });

  it('check: DENY is data too (exit 0); headers and the Istio form of a principal', async () => {
    const denied = await check('--principal', 'example.org/vm/catalog-client', '--path', '/admin/users');
    assert.equal(denied.code, 0);
    assert.match(denied.stdout, /^DENY\nreason: {5}denied by DENY policy sock-shop\/deny-admin rule 0\n/);
    const withToken = await check(
      '--principal',
      CLIENT,
      '--path',
      '/admin/users',
      '--header',
      'X-Admin-Token: s3cret',
    );
    assert.match(
      withToken.stdout,
      /^DENY\nreason: {5}denied: no ALLOW policy matched \(1 ALLOW policy applies/,
    );
    assert.doesNotMatch(withToken.stdout, /decided by/);
    const anonymous = await check('--path', '/catalogue');
    assert.match(anonymous.stdout, /^DENY\n/);
    assert.match(anonymous.stdout, /request: {4}HTTP GET \/catalogue, no client certificate\n/);
  });

  it('check --protocol tcp --output json: the decision, where, the request and the TCP warnings', async () => {
    const r = await check('--protocol', 'tcp', '--port', '5432', '--principal', CLIENT, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const j = JSON.parse(r.stdout);
    assert.equal(j.decision, 'DENY');
    assert.equal(j.allowed, false);
    assert.deepEqual(j.decidedBy, {
      policy: 'sock-shop/deny-admin',
      action: 'DENY',
      rule: 0,
      file: `${dir}/catalogue.yaml`,
      line: 17,
    });
    assert.deepEqual(
      j.audited.map((a: { policy: string }) => a.policy),
      ['istio-system/audit-all'],
    );
    assert.deepEqual(j.request, { protocol: 'tcp', sourcePrincipal: CLIENT, destinationPort: 5432 });
    assert.deepEqual(j.policies, { loaded: 3, applying: 3, ALLOW: 1, DENY: 1, AUDIT: 1 });
    assert.deepEqual(
      j.warnings.map(
        (w: { line: number; message: string }) => `${w.line} ${w.message.replace(/ is HTTP-only.*/, '')}`,
      ),
      [
        '30 skipped a Gateway (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read',
        '9 spec.rules[0].to[0].operation.methods',
        '9 spec.rules[0].to[0].operation.paths',
        '17 spec.rules[0].to[0].operation.paths',
        '19 spec.rules[0].when[0] (request.headers[x-admin-token])',
      ],
    );
  });

  it('check: the workload decides which policies apply', async () => {
    const r = await tessera(
      'policy',
      'check',
      '--policy',
      dir,
      '--namespace',
      'payments',
      '--principal',
      CLIENT,
      '--path',
      '/admin',
    );
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^ALLOW\nreason: {5}allowed: no DENY policy matched and no ALLOW policy applies to the workload\n/,
    );
    assert.match(r.stdout, /workload: {3}payments: 1 of 3 policies apply \(0 ALLOW, 0 DENY, 1 AUDIT\)/);
    const root = await check('--root-namespace', 'mesh', '--principal', CLIENT, '--path', '/catalogue');
    assert.match(root.stdout, /audited: {4}none\n/);
  });

  it('check: bad flags are one-line usage errors (exit 2)', async () => {
    const cases: [string[], RegExp][] = [
      [['policy', 'check', '--policy', dir], /--namespace is required/],
      [['policy', 'check', '--namespace', 'x'], /--policy <file\|dir> is required/],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--labels', 'app'],
        /--labels "app" is not key=value/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--protocol', 'udp'],
        /--protocol must be http or tcp/,
      ],
      [
        [
          'policy',
          'check',
          '--policy',
          dir,
          '--namespace',
          'x',
          '--protocol',
          'tcp',
          '--path',
          '/a',
          '--header',
          'a: b',
        ],
        /--path, --header: HTTP only; a TCP connection has none/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--port', '70000'],
        /--port "70000" is not a port/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--principal', 'spiffe://Example.org/x'],
        /--principal "spiffe:\/\/Example\.org\/x": /,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--source-ip', '10.0.0'],
        /--source-ip "10\.0\.0" is not an IPv4 or IPv6 address/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--header', 'novalue'],
        /--header "novalue" is not 'name: value'/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--claim', 'groups=a'],
        /give its --request-principal/,
      ],
      [
        ['policy', 'check', '--policy', dir, '--namespace', 'x', '--output', 'yaml'],
        /--output must be text or json/,
      ],
      [['policy', 'check', '--policy', dir, '--namespace', 'x', '--colour'], /--colour/],
      [['policy', 'lint'], /give at least one policy file or directory/],
    ];
    for (const [args, message] of cases) {
      const r = await tessera(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code} ${r.stderr}`);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^tessera policy (check|lint): /);
      assert.match(lines[0]!, message);
    }
  });

  it('check: policies that do not load exit 1, one line per problem with file:line', async () => {
    const r = await tessera(
      'policy',
      'check',
      '--policy',
      bad,
      '--policy',
      join(tmp.path, 'missing'),
      '--namespace',
      'sock-shop',
    );
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      `tessera policy check: ${bad}:5: sock-shop/b: spec.action: CUSTOM is not supported: Tessera has no external authorizer; use ALLOW/DENY`,
      `tessera policy check: ${bad}:7: sock-shop/b: spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" has a bad prefix length "33"; it must be a number from 0 to 32`,
      `tessera policy check: ${join(tmp.path, 'missing')}: cannot read the file or directory: ENOENT`,
    ]);
  });

  it('lint: every policy file, warnings, a summary; exit 0 when they load', async () => {
    const r = await tessera('policy', 'lint', dir);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trimEnd().split('\n'), [
      `warning: ${dir}/catalogue.yaml:30: skipped a Gateway (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read`,
      '3 policies, 1 warning',
    ]);
    const j = JSON.parse((await tessera('policy', 'lint', dir, '--output', 'json')).stdout);
    assert.equal(j.valid, true);
    assert.deepEqual(
      j.policies.map((p: { policy: string; line: number }) => `${p.policy}:${p.line}`),
      ['sock-shop/catalogue-allow-vm:1', 'sock-shop/deny-admin:11', 'istio-system/audit-all:22'],
    );
  });

  it('lint: problems with file:line, warnings, a summary; exit 1', async () => {
    const r = await tessera('policy', 'lint', bad, dir);
    assert.equal(r.code, 1);
    assert.deepEqual(r.stdout.trimEnd().split('\n'), [
      `error: ${bad}:5: sock-shop/b: spec.action: CUSTOM is not supported: Tessera has no external authorizer; use ALLOW/DENY`,
      `error: ${bad}:7: sock-shop/b: spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" has a bad prefix length "33"; it must be a number from 0 to 32`,
      `warning: ${dir}/catalogue.yaml:30: skipped a Gateway (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read`,
      '2 errors, 1 warning: the policies do not load',
    ]);
    const j = JSON.parse((await tessera('policy', 'lint', bad, '--output', 'json')).stdout);
    assert.equal(j.valid, false);
    assert.equal(j.errors.length, 2);
    assert.equal(j.errors[0].path, 'spec.action');
  });

  it('usage: tessera policy alone exits 2, --help 0; tessera lists the group', async () => {
    const none = await tessera('policy');
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^usage: tessera policy check/);
    const help = await tessera('policy', 'check', '--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--root-namespace <ns>/);
    const unknown = await tessera('policy', 'explain');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^tessera policy: unknown command "explain"/);
    assert.match((await tessera('help')).stdout, /\n {2}policy {7}Istio AuthorizationPolicies on their own/);
  });
});
