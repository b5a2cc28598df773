// Reading policies: what is accepted, what is skipped with a warning, and every problem reported
// together with its line, policy and field, as ERR_POLICY_INVALID.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import { formatPolicyProblem, PolicyInvalidError, type PolicyProblem, parsePolicies } from './index.js';

const HEAD =
  'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: shop\n';

/** Parses text that must fail; returns the problems (and checks the error's code and message). */
function problemsOf(text: string, file = 'bad.yaml'): PolicyProblem[] {
  try {
    parsePolicies(text, file);
  } catch (err) {
    assert.ok(isTesseraError(err, TesseraErrorCode.POLICY_INVALID), String(err));
    assert.ok(err instanceof PolicyInvalidError);
    const lines = err.message.split('\n');
    assert.match(
      lines[0]!,
      new RegExp(`^policy: ${err.problems.length} problems? in the authorization policies:$`),
    );
    assert.deepEqual(
      lines.slice(1),
      err.problems.map((p) => `  ${formatPolicyProblem(p)}`),
    );
    return [...err.problems];
  }
  assert.fail('expected ERR_POLICY_INVALID');
}

/** The one problem of `text`, formatted. */
function problem(text: string): string {
  const ps = problemsOf(text);
  assert.equal(ps.length, 1, ps.map(formatPolicyProblem).join('\n'));
  return formatPolicyProblem(ps[0]!);
}

describe('parsePolicies: accepted', () => {
  it('v1 and v1beta1, many documents, the action defaulting to ALLOW, ports as strings, frozen', () => {
    const text = `${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: [8080, "9090"]\n---\n---\n${HEAD.replace('v1', 'v1beta1').replace('name: p', 'name: q')}spec:\n  action: DENY\n  rules: [{}]\n`;
    const { policies, warnings } = parsePolicies(text, 'two.yaml');
    assert.deepEqual(warnings, []);
    assert.deepEqual(
      policies.map((p) => [
        p.apiVersion,
        p.metadata.namespace,
        p.metadata.name,
        p.spec.action,
        p.origin.line,
      ]),
      [
        ['security.istio.io/v1', 'shop', 'p', 'ALLOW', 1],
        ['security.istio.io/v1beta1', 'shop', 'q', 'DENY', 13],
      ],
    );
    assert.deepEqual(policies[0]!.spec.rules[0]!.to![0]!.operation.ports, ['8080', '9090']);
    assert.equal(policies[0]!.origin.lines['spec.rules[0].to[0].operation.ports'], 10);
    assert.ok(Object.isFrozen(policies[0]!.spec.rules[0]!.to![0]!.operation.ports));
    assert.ok(Object.isFrozen(policies));
  });

  it('JSON, and a List wrapper as kubectl get -o yaml prints', () => {
    const json = JSON.stringify({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'j', namespace: 'shop', uid: 'abc', resourceVersion: '7', annotations: { a: 'b' } },
      spec: { rules: [{ from: [{ source: { principals: ['example.org/ns/a/sa/b'] } }] }] },
      status: { validationMessages: [] },
    });
    assert.equal(parsePolicies(json, 'p.json').policies[0]!.metadata.name, 'j');
    const list = `apiVersion: v1\nkind: List\nitems:\n- ${HEAD.replace(/\n/g, '\n  ').trimEnd()}\n  spec: {}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n`;
    const { policies, warnings } = parsePolicies(list, 'list.yaml');
    assert.deepEqual(
      policies.map((p) => p.metadata.name),
      ['p'],
    );
    assert.deepEqual(warnings, [
      {
        file: 'list.yaml',
        line: 11,
        message: 'skipped a ConfigMap (v1): only AuthorizationPolicy resources of security.istio.io are read',
      },
    ]);
  });

  it('other kinds are skipped with a warning naming the kind, file and line', () => {
    const text = `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [x]}\n---\n${HEAD}spec: {}\n---\napiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: l}\n`;
    const { policies, warnings } = parsePolicies(text, 'istio.yaml');
    assert.equal(policies.length, 1);
    assert.deepEqual(
      warnings.map((w) => `${w.file}:${w.line}: ${w.message}`),
      [
        'istio.yaml:2: skipped a VirtualService (networking.istio.io/v1): only AuthorizationPolicy resources of security.istio.io are read',
        'istio.yaml:14: skipped a AuthorizationPolicy (policy.linkerd.io/v1alpha1): only AuthorizationPolicy resources of security.istio.io are read',
      ],
    );
  });

  it('a dry-run policy is skipped with a warning; an empty file has no policies', () => {
    const text = HEAD.replace(
      'namespace: shop\n',
      'namespace: shop\n  annotations:\n    istio.io/dry-run: "true"\n',
    );
    const { policies, warnings } = parsePolicies(`${text}spec: {}\n`, 'dry.yaml');
    assert.equal(policies.length, 0);
    assert.match(warnings[0]!.message, /istio\.io\/dry-run/);
    assert.equal(warnings[0]!.policy, 'shop/p');
    assert.deepEqual(parsePolicies('', 'empty.yaml'), { policies: [], warnings: [] });
    assert.deepEqual(parsePolicies('# nothing\n---\n', 'empty.yaml').policies, []);
  });

  it('warnings for things that load but are likely mistakes', () => {
    const { warnings } = parsePolicies(
      `${HEAD}spec:\n  selector: {matchLabels: {}}\n  rules:\n  - to:\n    - operation:\n        methods: ["get"]\n`,
      'w.yaml',
    );
    assert.deepEqual(
      warnings.map((w) => [w.line, w.message]),
      [
        [7, 'spec.selector has no labels: the policy applies to every workload of its namespace'],
        [
          11,
          'spec.rules[0].to[0].operation.methods: "get" is not upper case; HTTP methods are case-sensitive, so it never matches a GET request',
        ],
      ],
    );
  });
});

describe('parsePolicies: problems', () => {
  it('an unknown or misspelled field names the field, the line and what is allowed there', () => {
    assert.equal(
      problem(
        `${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        principal: ["example.org/ns/a/sa/b"]\n`,
      ),
      'bad.yaml:10: shop/p: spec.rules[0].from[0].source.principal: unknown field "principal" (did you mean "principals"?); allowed here: principals, notPrincipals, requestPrincipals, notRequestPrincipals, namespaces, notNamespaces, serviceAccounts, notServiceAccounts, trustDomains, notTrustDomains, ipBlocks, notIpBlocks, remoteIpBlocks, notRemoteIpBlocks',
    );
    assert.match(
      problem(`${HEAD}spec:\n  colour: red\n`),
      /^bad\.yaml:7: shop\/p: spec\.colour: unknown field "colour"; allowed here: selector, action, rules$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rule: []\n`),
      /spec\.rule: unknown field "rule" \(did you mean "rules"\?\)/,
    );
    assert.match(
      problem(HEAD.replace('namespace:', 'namespce:')),
      /^bad\.yaml:5: .*metadata\.namespce: unknown field "namespce" \(did you mean "namespace"\?\)/,
    );
  });

  it('wrong types say what is expected', () => {
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        methods: GET\n`),
      /:10: shop\/p: spec\.rules\[0\]\.to\[0\]\.operation\.methods: must be a list of strings, e\.g\. \["GET"\]; got the string "GET"$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  selector:\n    matchLabels:\n      version: 1\n`),
      /spec\.selector\.matchLabels\.version: must be a string; got 1 \(quote it: "1"\)$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules: {}\n`),
      /spec\.rules: must be a list of rules; got a mapping$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: [true]\n`),
      /ports\[0\]: must be a string; got true$/,
    );
  });

  it('CUSTOM, provider, targetRef and targetRefs are not supported, and say why', () => {
    const ps = problemsOf(
      `${HEAD}spec:\n  action: CUSTOM\n  provider: {name: ext-authz}\n  targetRef: {kind: Gateway, name: g}\n  targetRefs: [{kind: Service, name: s}]\n  rules: [{}]\n`,
    ).map(formatPolicyProblem);
    assert.deepEqual(ps, [
      'bad.yaml:7: shop/p: spec.action: CUSTOM is not supported: Tessera has no external authorizer; use ALLOW/DENY',
      'bad.yaml:8: shop/p: spec.provider: not supported: Tessera has no external authorizer (provider is for action CUSTOM); use ALLOW/DENY',
      'bad.yaml:9: shop/p: spec.targetRef: not supported: Tessera proxies are selected by labels (spec.selector.matchLabels), not by targetRef',
      'bad.yaml:10: shop/p: spec.targetRefs: not supported: Tessera proxies are selected by labels (spec.selector.matchLabels), not by targetRefs',
    ]);
    assert.match(
      problem(`${HEAD}spec:\n  action: allow\n`),
      /"allow" is not an action \(write it in upper case: ALLOW\)/,
    );
  });

  it('bad ports, CIDRs and addresses', () => {
    const ps = problemsOf(
      `${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: ["10.0.0.0/33", "10.0.0.256", "2001:db8::/129", "1.2.3.4/24"]\n    to:\n    - operation:\n        ports: ["0", "65536", "http", "443"]\n`,
    ).map((p) => `${p.line} ${p.path}`);
    assert.deepEqual(ps, [
      '10 spec.rules[0].from[0].source.ipBlocks[0]',
      '10 spec.rules[0].from[0].source.ipBlocks[1]',
      '10 spec.rules[0].from[0].source.ipBlocks[2]',
      '13 spec.rules[0].to[0].operation.ports[0]',
      '13 spec.rules[0].to[0].operation.ports[1]',
      '13 spec.rules[0].to[0].operation.ports[2]',
    ]);
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - when:\n    - key: source.ip\n      values: ["10.0.0.0/40"]\n`),
      /values\[0\]: "10\.0\.0\.0\/40" has a bad prefix length "40"; it must be a number from 0 to 32$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - when:\n    - key: destination.ip\n      values: ["010.0.0.1"]\n`),
      /"010\.0\.0\.1" is not an IP address or CIDR block/,
    );
    for (const ok of ['0.0.0.0/0', '::/0', '::ffff:10.0.0.0/104', 'fe80::1', '2001:db8:0:0:0:0:0:1/128']) {
      assert.equal(
        parsePolicies(
          `${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: ["${ok}"]\n`,
          'ok.yaml',
        ).policies.length,
        1,
        ok,
      );
    }
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: ["80a"]\n`),
      /"80a" is not a port; a port is a number from 1 to 65535$/,
    );
  });

  it('when: an unknown key is named with the keys allowed; experimental and removed keys say why', () => {
    const when = (key: string) =>
      problem(`${HEAD}spec:\n  rules:\n  - when:\n    - key: ${key}\n      values: ["x"]\n`);
    assert.match(
      when('request.header[x]'),
      /:9: shop\/p: spec\.rules\[0\]\.when\[0\]\.key: unknown key "request\.header\[x\]" \(did you mean "request\.headers"\?\); the keys are request\.headers\[<name>\], source\.ip/,
    );
    assert.match(
      when('experimental.envoy.filters.network.mysql_proxy[db.table]'),
      /not supported: Tessera is not Envoy/,
    );
    assert.match(when('destination.labels[app]'), /replaced by spec\.selector\.matchLabels/);
    assert.match(when('request.auth.claims'), /is not request\.auth\.claims\[<name>\]/);
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - when:\n    - key: source.ip\n`),
      /spec\.rules\[0\]\.when\[0\]: needs values or notValues for key source\.ip$/,
    );
  });

  it('principals and other patterns: a wildcard only at the start or the end', () => {
    const principal = (p: string) =>
      problem(`${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        principals: ["${p}"]\n`);
    assert.match(
      principal('cluster.local/ns/*/sa/sleep'),
      /principals\[0\]: "cluster\.local\/ns\/\*\/sa\/sleep" has a wildcard in the middle/,
    );
    assert.match(principal('*foo*'), /has 2 wildcards/);
    assert.match(principal('Cluster.local/ns/a/sa/b'), /trust domain has an upper-case letter/);
    assert.match(principal('spiffe:/cluster.local/ns/a'), /is not a valid principal/);
    assert.match(principal('cluster.local'), /it has no path/);
    assert.match(principal('cluster.local/ns//sa/b'), /the path segment "" must be non-empty/);
    assert.match(principal(''), /empty value/);
    for (const ok of [
      '*',
      'cluster.local/*',
      'cluster.*',
      '*/sa/sleep',
      'spiffe://cluster.local/ns/a/sa/b',
      'cluster.local/ns/a/sa/b*',
    ]) {
      assert.equal(
        parsePolicies(
          `${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        principals: ["${ok}"]\n`,
          'ok.yaml',
        ).policies.length,
        1,
        ok,
      );
    }
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        paths: ["/api/*/v1"]\n`),
      /wildcard in the middle, which Istio matches literally/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        paths: ["/{**}/foo/{*}"]\n`),
      /\{\*\*\} must be the last operator/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        paths: ["/foo/{*}.txt"]\n`),
      /the segment "\{\*\}\.txt" is not allowed in a path template/,
    );
  });

  it('structure: metadata.name required, empty from/source, DENY without rules, serviceAccounts with principals', () => {
    assert.match(
      problem(
        'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  namespace: shop\nspec: {}\n',
      ),
      /^bad\.yaml:3: metadata\.name: is required/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - from: []\n`),
      /spec\.rules\[0\]\.from: must not be empty: leave "from" out to match any source$/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - from:\n    - {}\n`),
      /spec\.rules\[0\]\.from\[0\]\.source: is required/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  - to:\n    - operation: {methods: []}\n`),
      /operation: must not be empty: give at least one of hosts/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  action: DENY\n`),
      /spec\.rules: a DENY policy without rules never matches.*rules: \[\{\}\]/,
    );
    assert.match(
      problem(
        `${HEAD}spec:\n  rules:\n  - from:\n    - source:\n        serviceAccounts: ["a"]\n        namespaces: ["b"]\n`,
      ),
      /serviceAccounts cannot be combined with principals or namespaces/,
    );
    assert.match(
      problem(`${HEAD}spec:\n  rules:\n  -\n`),
      /spec\.rules\[0\]: a rule must not be empty; write \{\}/,
    );
  });

  it('apiVersion of Istio other than v1 and v1beta1, a document without kind, YAML syntax, duplicate names', () => {
    assert.match(
      problem(HEAD.replace('/v1', '/v1alpha1')),
      /^bad\.yaml:1: apiVersion: "security\.istio\.io\/v1alpha1" is not supported; use security\.istio\.io\/v1 or security\.istio\.io\/v1beta1$/,
    );
    assert.match(problem('metadata: {name: x}\nspec: {}\n'), /^bad\.yaml:1: kind: is missing/);
    assert.match(problem(`${HEAD}spec:\n  rules: [\n`), /^bad\.yaml:\d+: YAML syntax: /);
    assert.match(
      problem(`${HEAD}spec: {}\n---\n${HEAD}spec: {}\n`),
      /^bad\.yaml:8: shop\/p: metadata\.name: a policy with this namespace and name is already defined at bad\.yaml:1/,
    );
  });

  it('every problem of every document is reported together, in line order', () => {
    const text = `${HEAD}spec:\n  action: NOPE\n  rules:\n  - to:\n    - operation:\n        ports: ["0"]\n---\n${HEAD.replace('name: p', 'name: q')}spec:\n  selctor: {}\n`;
    assert.deepEqual(
      problemsOf(text).map((p) => `${p.line} ${p.policy} ${p.path}`),
      ['7 shop/p spec.action', '11 shop/p spec.rules[0].to[0].operation.ports[0]', '19 shop/q spec.selctor'],
    );
  });
});
