// Loading from files and directories: which files are read, in what order, and every file's problems
// reported together.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir, type TempDir } from '@tessera/testkit';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { formatPolicyProblem, loadPolicies, PolicyInvalidError } from './index.js';

const policy = (name: string, spec = '{}') =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: shop\nspec: ${spec}\n`;

describe('loadPolicies', () => {
  let tmp: TempDir;
  let dir: string;
  before(async () => {
    tmp = await makeTempDir('tessera-policy-');
    dir = join(tmp.path, 'istio');
    mkdirSync(join(dir, 'nested'), { recursive: true });
    writeFileSync(join(dir, 'b.yaml'), `${policy('b1')}---\n${policy('b2')}`);
    writeFileSync(join(dir, 'a.yml'), policy('a'));
    writeFileSync(
      join(dir, 'c.json'),
      JSON.stringify({
        apiVersion: 'security.istio.io/v1beta1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'c', namespace: 'shop' },
        spec: {},
      }),
    );
    writeFileSync(
      join(dir, 'gateway.yaml'),
      'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n',
    );
    writeFileSync(join(dir, 'README.md'), policy('not-read'));
    writeFileSync(join(dir, 'nested', 'n.yaml'), policy('nested-not-read'));
    writeFileSync(join(tmp.path, 'single.yaml'), policy('single'));
    mkdirSync(join(tmp.path, 'empty'));
  });
  after(() => tmp.cleanup());

  it('a directory: *.yaml, *.yml and *.json in name order, not recursive, other kinds skipped with a warning', () => {
    const { policies, warnings } = loadPolicies([dir, join(tmp.path, 'single.yaml')]);
    assert.deepEqual(
      policies.map((p) => `${p.metadata.name}@${p.origin.file.slice(tmp.path.length)}:${p.origin.line}`),
      [
        'a@/istio/a.yml:1',
        'b1@/istio/b.yaml:1',
        'b2@/istio/b.yaml:8',
        'c@/istio/c.json:1',
        'single@/single.yaml:1',
      ],
    );
    assert.deepEqual(
      warnings.map((w) => `${w.file.slice(tmp.path.length)}:${w.line}: ${w.message}`),
      [
        '/istio/gateway.yaml:2: skipped a Gateway (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read',
      ],
    );
  });

  it('an empty directory loads nothing, with a warning', () => {
    const { policies, warnings } = loadPolicies([join(tmp.path, 'empty')]);
    assert.equal(policies.length, 0);
    assert.match(warnings[0]!.message, /no \*\.yaml, \*\.yml, \*\.json files/);
  });

  it('problems of every file, a missing path and duplicates across files are thrown together', async () => {
    const bad = join(tmp.path, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, '1.yaml'), policy('x', '{action: CUSTOM}'));
    writeFileSync(join(bad, '2.yaml'), `${policy('y')}---\n${policy('single')}`);
    writeFileSync(join(bad, '3.yaml'), policy('z', '{rules: [{to: [{operation: {ports: ["99999"]}}]}]}'));
    let err: unknown;
    try {
      loadPolicies([bad, join(tmp.path, 'missing.yaml'), join(tmp.path, 'single.yaml')]);
    } catch (e) {
      err = e;
    }
    assert.ok(isTesseraError(err, TesseraErrorCode.POLICY_INVALID));
    assert.ok(err instanceof PolicyInvalidError);
    const lines = err.problems.map((p) => formatPolicyProblem(p).replaceAll(tmp.path, ''));
    assert.deepEqual(lines, [
      '/bad/1.yaml:6: shop/x: spec.action: CUSTOM is not supported: Tessera has no external authorizer; use ALLOW/DENY',
      '/bad/3.yaml:6: shop/z: spec.rules[0].to[0].operation.ports[0]: "99999" is not a port; a port is a number from 1 to 65535',
      '/missing.yaml: cannot read the file or directory: ENOENT',
      '/single.yaml:1: shop/single: metadata.name: a policy with this namespace and name is already defined at /bad/2.yaml:8; Kubernetes would keep only one, so give each its own name',
    ]);
    assert.equal(err.message.split('\n').length, 5, 'a heading and one line per problem');
  });

  it('paths must be an array', () => {
    assert.throws(() => loadPolicies('policies.yaml' as unknown as string[]), { name: 'TypeError' });
  });
});
