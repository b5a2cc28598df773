// The engine's semantics beyond the documented examples: which policies apply, the order of actions,
// every kind of match, Istio's TCP rule, and the index not changing which rule decides.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTesseraError, TesseraErrorCode } from '../../common/errors.js';
import {
  type AuthorizationPolicy,
  createPolicyEngine,
  type PolicyEngineOptions,
  type PolicyRequest,
  type PolicyWorkload,
  parsePolicies,
} from './index.js';

const CATALOGUE: PolicyWorkload = { namespace: 'sock-shop', labels: { app: 'catalogue', version: 'v1' } };
const FRONT = 'spiffe://example.org/ns/sock-shop/sa/front-end';
const ORDERS = 'spiffe://example.org/ns/sock-shop/sa/orders';
const VM = 'spiffe://example.org/vm/catalog-client';

/** One AuthorizationPolicy document; `spec` is YAML indented as under `spec:`. */
function doc(name: string, spec: string, namespace = 'sock-shop'): string {
  const body = spec
    .replace(/^\n/, '')
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
  return `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n${body}\n`;
}

function engine(docs: string[], workload = CATALOGUE, options: PolicyEngineOptions = {}) {
  return createPolicyEngine(parsePolicies(docs.join('---\n'), 'policies.yaml').policies, workload, options);
}

function get(
  path: string,
  o: Partial<PolicyRequest> & {
    headers?: Record<string, string | string[]>;
    method?: string;
    host?: string;
  } = {},
): PolicyRequest {
  const { headers, method, host, ...rest } = o;
  return {
    protocol: 'http',
    sourcePrincipal: FRONT,
    destinationPort: 8080,
    http: {
      method: method ?? 'GET',
      path,
      host: host ?? 'catalogue.sock-shop.svc:8080',
      headers: headers ?? {},
    },
    ...rest,
  };
}

function tcp(o: Partial<PolicyRequest> = {}): PolicyRequest {
  return { protocol: 'tcp', sourcePrincipal: FRONT, destinationPort: 5432, ...o };
}

const ALLOW_ALL = doc('allow-all', 'rules:\n- {}');

describe('which policies apply to the workload', () => {
  const allowNothing = (ns: string, selector = '') =>
    doc(`allow-nothing-${ns}`, `${selector}{}`.replace(/^\{\}$/, '{}'), ns);

  it('a policy in the workload namespace applies; one in another namespace does not', () => {
    assert.equal(engine([allowNothing('sock-shop')]).evaluate(get('/')).allowed, false);
    const other = engine([allowNothing('payments')]);
    assert.equal(other.evaluate(get('/')).allowed, true);
    assert.deepEqual(other.policies, []);
  });

  it('a policy in the root namespace (istio-system by default, or the workload setting) applies everywhere', () => {
    assert.equal(engine([allowNothing('istio-system')]).evaluate(get('/')).allowed, false);
    const custom = { ...CATALOGUE, rootNamespace: 'mesh-root' };
    assert.equal(engine([allowNothing('mesh-root')], custom).evaluate(get('/')).allowed, false);
    assert.equal(engine([allowNothing('istio-system')], custom).evaluate(get('/')).allowed, true);
  });

  it('a selector applies when every label is present with the same value', () => {
    const sel = (labels: string) => doc('sel', `selector:\n  matchLabels:\n${labels}\n`);
    assert.equal(
      engine([sel('    app: catalogue')]).evaluate(get('/')).allowed,
      false,
      'subset of the labels',
    );
    assert.equal(engine([sel('    app: catalogue\n    version: v1')]).evaluate(get('/')).allowed, false);
    assert.equal(
      engine([sel('    app: catalogue\n    version: v2')]).evaluate(get('/')).allowed,
      true,
      'value differs',
    );
    assert.equal(
      engine([sel('    app: catalogue\n    tier: db')]).evaluate(get('/')).allowed,
      true,
      'label missing',
    );
    assert.equal(engine([sel('    app: orders')]).policies.length, 0);
  });

  it('a metadata without namespace is in "default", as kubectl would apply it', () => {
    const text =
      'apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\nspec: {}\n';
    const { policies } = parsePolicies(text, 'x.yaml');
    assert.equal(policies[0]!.metadata.namespace, 'default');
    assert.equal(
      createPolicyEngine(policies, { namespace: 'default', labels: {} }).evaluate(get('/')).allowed,
      false,
    );
  });
});

describe('the order of actions', () => {
  it('no policy at all: allowed, and the reason says why', () => {
    const d = engine([]).evaluate(get('/'));
    assert.equal(d.allowed, true);
    assert.equal(d.decidedBy, undefined);
    assert.match(d.reason, /no ALLOW policy applies/);
  });

  it('an ALLOW policy with no rules (spec: {} or rules: []) allows nothing', () => {
    for (const spec of ['{}', 'action: ALLOW', 'rules: []']) {
      const d = engine([doc('allow-nothing', spec)]).evaluate(get('/'));
      assert.equal(d.allowed, false, spec);
      assert.match(
        d.reason,
        /no ALLOW policy matched \(1 ALLOW policy applies to the workload: sock-shop\/allow-nothing\)/,
      );
    }
  });

  it('rules: [{}] matches every request and connection', () => {
    const e = engine([ALLOW_ALL]);
    assert.equal(e.evaluate(get('/anything', { sourcePrincipal: undefined })).allowed, true);
    assert.equal(e.evaluate(tcp({ sourcePrincipal: undefined })).allowed, true);
  });

  it('a matching DENY wins over a matching ALLOW, wherever it is loaded', () => {
    const deny = doc('deny-orders', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/orders*"]');
    for (const order of [
      [ALLOW_ALL, deny],
      [deny, ALLOW_ALL],
    ]) {
      const e = engine(order);
      const d = e.evaluate(get('/orders/1'));
      assert.equal(d.allowed, false);
      assert.deepEqual(d.decidedBy, { policy: 'sock-shop/deny-orders', action: 'DENY', rule: 0 });
      assert.equal(d.reason, 'denied by DENY policy sock-shop/deny-orders rule 0');
      assert.equal(
        e.evaluate(get('/catalogue')).reason,
        'allowed by ALLOW policy sock-shop/allow-all rule 0',
      );
    }
  });

  it('the reason names the rule index that matched', () => {
    const e = engine([
      doc(
        'two',
        'rules:\n- to:\n  - operation:\n      paths: ["/a"]\n- to:\n  - operation:\n      paths: ["/b"]',
      ),
    ]);
    assert.deepEqual(e.evaluate(get('/b')).decidedBy, { policy: 'sock-shop/two', action: 'ALLOW', rule: 1 });
    assert.equal(e.evaluate(get('/b')).reason, 'allowed by ALLOW policy sock-shop/two rule 1');
  });

  it('AUDIT only marks: the decision is the same with or without it', () => {
    const audit = (name: string, path: string) =>
      doc(name, `action: AUDIT\nrules:\n- to:\n  - operation:\n      paths: ["${path}"]`);
    const deny = doc('deny-admin', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin"]');
    const e = engine([audit('audit-admin', '/admin'), audit('audit-all', '*'), deny, ALLOW_ALL]);
    const admin = e.evaluate(get('/admin'));
    assert.equal(admin.allowed, false);
    assert.equal(admin.decidedBy?.policy, 'sock-shop/deny-admin');
    assert.deepEqual(
      admin.audited.map((a) => `${a.policy} ${a.action} ${a.rule}`),
      ['sock-shop/audit-admin AUDIT 0', 'sock-shop/audit-all AUDIT 0'],
    );
    const other = e.evaluate(get('/other'));
    assert.equal(other.allowed, true);
    assert.deepEqual(
      other.audited.map((a) => a.policy),
      ['sock-shop/audit-all'],
    );
    // An AUDIT policy alone is not an ALLOW policy: nothing is denied by default.
    assert.equal(engine([audit('audit-admin', '/admin')]).evaluate(get('/x')).allowed, true);
  });

  it('decisions are frozen', () => {
    const d = engine([ALLOW_ALL]).evaluate(get('/'));
    assert.ok(Object.isFrozen(d));
    assert.throws(() => {
      (d as { allowed: boolean }).allowed = false;
    });
  });
});

describe('sources', () => {
  const allowFrom = (source: string) => engine([doc('p', `rules:\n- from:\n  - source:\n      ${source}`)]);

  it('principals: the Istio form and the SPIFFE ID form are the same principal, in the policy and in the request', () => {
    for (const pattern of [
      'example.org/ns/sock-shop/sa/front-end',
      'spiffe://example.org/ns/sock-shop/sa/front-end',
    ]) {
      const e = allowFrom(`principals: ["${pattern}"]`);
      assert.equal(e.evaluate(get('/')).allowed, true, pattern);
      assert.equal(
        e.evaluate(get('/', { sourcePrincipal: 'example.org/ns/sock-shop/sa/front-end' })).allowed,
        true,
      );
      assert.equal(e.evaluate(get('/', { sourcePrincipal: ORDERS })).allowed, false);
    }
  });

  it('principals: prefix, suffix and presence', () => {
    const prefix = allowFrom('principals: ["example.org/ns/sock-shop/*"]');
    assert.equal(prefix.evaluate(get('/')).allowed, true);
    assert.equal(prefix.evaluate(get('/', { sourcePrincipal: VM })).allowed, false);
    const suffix = allowFrom('principals: ["*/sa/orders"]');
    assert.equal(suffix.evaluate(get('/', { sourcePrincipal: ORDERS })).allowed, true);
    assert.equal(suffix.evaluate(get('/')).allowed, false);
    const present = allowFrom('principals: ["*"]');
    assert.equal(present.evaluate(get('/', { sourcePrincipal: VM })).allowed, true);
    assert.equal(
      present.evaluate(get('/', { sourcePrincipal: undefined })).allowed,
      false,
      'no client certificate',
    );
  });

  it('without a client certificate, no principals value matches but notPrincipals is satisfied', () => {
    const anon = get('/', { sourcePrincipal: undefined });
    assert.equal(
      allowFrom('principals: ["example.org/ns/sock-shop/sa/front-end"]').evaluate(anon).allowed,
      false,
    );
    assert.equal(
      allowFrom('notPrincipals: ["example.org/ns/sock-shop/sa/front-end"]').evaluate(anon).allowed,
      true,
    );
    const deny = engine([
      doc('deny-others', `action: DENY\nrules:\n- from:\n  - source:\n      notPrincipals: ["${FRONT}"]`),
    ]);
    assert.equal(
      deny.evaluate(anon).allowed,
      false,
      'a DENY on notPrincipals denies a peer without a certificate',
    );
    assert.equal(deny.evaluate(get('/')).allowed, true);
  });

  it('namespaces come from the /ns/<name>/ segment of the peer SPIFFE ID', () => {
    const e = allowFrom('namespaces: ["sock-shop"]');
    assert.equal(e.evaluate(get('/')).allowed, true);
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/payments/sa/x' })).allowed,
      false,
    );
    assert.equal(e.evaluate(get('/', { sourcePrincipal: VM })).allowed, false, 'no /ns/ segment');
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/sock-shop' })).allowed,
      false,
    );
    const not = allowFrom('notNamespaces: ["sock-shop"]');
    assert.equal(not.evaluate(get('/', { sourcePrincipal: VM })).allowed, true);
    assert.equal(not.evaluate(get('/')).allowed, false);
    const prefix = allowFrom('namespaces: ["sock-*"]');
    assert.equal(prefix.evaluate(get('/')).allowed, true);
  });

  it('serviceAccounts: <name> is in the policy namespace, <namespace>/<name> anywhere', () => {
    const e = allowFrom('serviceAccounts: ["front-end", "payments/worker"]');
    assert.equal(e.evaluate(get('/')).allowed, true);
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/payments/sa/worker' })).allowed,
      true,
    );
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/payments/sa/front-end' })).allowed,
      false,
    );
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/sock-shop/sa/front-end-2' })).allowed,
      false,
    );
  });

  it('trustDomains', () => {
    const e = allowFrom('trustDomains: ["example.org"]');
    assert.equal(e.evaluate(get('/')).allowed, true);
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://partner.org/ns/sock-shop/sa/front-end' })).allowed,
      false,
    );
  });

  it('ipBlocks, notIpBlocks and remoteIpBlocks, IPv4 and IPv6', () => {
    const e = allowFrom('ipBlocks: ["10.0.0.0/8", "2001:db8::/32"]\n      notIpBlocks: ["10.9.0.0/16"]');
    assert.equal(e.evaluate(get('/', { sourceIp: '10.1.2.3' })).allowed, true);
    assert.equal(e.evaluate(get('/', { sourceIp: '10.9.2.3' })).allowed, false);
    assert.equal(e.evaluate(get('/', { sourceIp: '11.1.2.3' })).allowed, false);
    assert.equal(e.evaluate(get('/', { sourceIp: '2001:db8:1::7' })).allowed, true);
    assert.equal(e.evaluate(get('/', { sourceIp: '2001:db9::7' })).allowed, false);
    assert.equal(e.evaluate(get('/', { sourceIp: '::ffff:10.1.2.3' })).allowed, true, 'IPv4-mapped');
    assert.equal(e.evaluate(get('/')).allowed, false, 'no address');
    const wide = allowFrom('ipBlocks: ["0.0.0.0/1", "192.168.0.0/16", "::/0"]');
    for (const ip of ['10.1.2.3', '192.168.7.7', '2001:db8::1'])
      assert.equal(wide.evaluate(get('/', { sourceIp: ip })).allowed, true, ip);
    assert.equal(wide.evaluate(get('/', { sourceIp: '172.16.0.1' })).allowed, false);
    const remote = allowFrom('remoteIpBlocks: ["203.0.113.0/24"]');
    assert.equal(remote.evaluate(get('/', { sourceIp: '10.0.0.1', remoteIp: '203.0.113.9' })).allowed, true);
    assert.equal(
      remote.evaluate(get('/', { sourceIp: '203.0.113.9' })).allowed,
      true,
      'remoteIp defaults to sourceIp',
    );
    assert.equal(remote.evaluate(get('/', { sourceIp: '203.0.113.9', remoteIp: '10.0.0.1' })).allowed, false);
  });

  it('fields of one source AND, sources OR', () => {
    const e = engine([
      doc(
        'p',
        `rules:\n- from:\n  - source:\n      principals: ["${FRONT}"]\n      ipBlocks: ["10.0.0.0/8"]\n  - source:\n      principals: ["${VM}"]`,
      ),
    ]);
    assert.equal(e.evaluate(get('/', { sourceIp: '10.0.0.1' })).allowed, true);
    assert.equal(e.evaluate(get('/', { sourceIp: '192.168.0.1' })).allowed, false);
    assert.equal(e.evaluate(get('/', { sourcePrincipal: VM, sourceIp: '192.168.0.1' })).allowed, true);
  });
});

describe('operations and conditions', () => {
  const allowTo = (op: string) => engine([doc('p', `rules:\n- to:\n  - operation:\n      ${op}`)]);
  const allowWhen = (cond: string) => engine([doc('p', `rules:\n- when:\n  - ${cond}`)]);

  it('paths match the part before ? and #', () => {
    const e = allowTo('paths: ["/catalogue", "/catalogue/*"]');
    assert.equal(e.evaluate(get('/catalogue?size=5')).allowed, true);
    assert.equal(e.evaluate(get('/catalogue/42?x=1#top')).allowed, true);
    assert.equal(e.evaluate(get('/catalogue#x')).allowed, true);
    assert.equal(e.evaluate(get('/catalogues')).allowed, false);
    assert.equal(e.evaluate(get('/orders?path=/catalogue')).allowed, false);
  });

  it('paths: suffix and URI templates {*} and {**}', () => {
    const suffix = allowTo('paths: ["*.json"]');
    assert.equal(suffix.evaluate(get('/a/b.json?x')).allowed, true);
    assert.equal(suffix.evaluate(get('/a/b.xml')).allowed, false);
    const one = allowTo('paths: ["/foo/{*}"]');
    assert.equal(one.evaluate(get('/foo/bar')).allowed, true);
    assert.equal(one.evaluate(get('/foo/bar/baz')).allowed, false);
    assert.equal(one.evaluate(get('/foo/')).allowed, false);
    const many = allowTo('paths: ["/foo/{*}/bar/{**}"]');
    assert.equal(many.evaluate(get('/foo/buzz/bar/')).allowed, true);
    assert.equal(many.evaluate(get('/foo/buzz/bar/baz')).allowed, true);
    assert.equal(many.evaluate(get('/foo/buzz/bar/baz/qux')).allowed, true);
    assert.equal(many.evaluate(get('/foo/buzz/qux/baz')).allowed, false);
  });

  it('methods are exact and case-sensitive; notMethods excludes', () => {
    const e = allowTo('methods: ["GET", "HEAD"]');
    assert.equal(e.evaluate(get('/', { method: 'HEAD' })).allowed, true);
    assert.equal(e.evaluate(get('/', { method: 'get' })).allowed, false);
    assert.equal(allowTo('notMethods: ["DELETE"]').evaluate(get('/', { method: 'DELETE' })).allowed, false);
    assert.equal(allowTo('notMethods: ["DELETE"]').evaluate(get('/', { method: 'PUT' })).allowed, true);
  });

  it('hosts are case-insensitive, with prefix, suffix and presence', () => {
    const e = allowTo('hosts: ["*.Sock-Shop.svc:8080", "Catalogue"]');
    assert.equal(e.evaluate(get('/', { host: 'catalogue.SOCK-SHOP.svc:8080' })).allowed, true);
    assert.equal(e.evaluate(get('/', { host: 'CATALOGUE' })).allowed, true);
    assert.equal(
      e.evaluate(get('/', { host: 'catalogue.sock-shop.svc' })).allowed,
      false,
      'the port is part of the host',
    );
    const present = allowTo('hosts: ["*"]');
    assert.equal(present.evaluate(get('/', { host: 'x' })).allowed, true);
    assert.equal(present.evaluate(get('/', { host: '' })).allowed, false);
  });

  it('ports and destination.port compare the destination port', () => {
    const e = allowTo('ports: [8080, "9090"]');
    assert.equal(e.evaluate(get('/')).allowed, true);
    assert.equal(e.evaluate(get('/', { destinationPort: 9090 })).allowed, true);
    assert.equal(e.evaluate(get('/', { destinationPort: 80 })).allowed, false);
    const w = allowWhen('key: destination.port\n    notValues: ["8080"]');
    assert.equal(w.evaluate(get('/')).allowed, false);
    assert.equal(w.evaluate(get('/', { destinationPort: 8081 })).allowed, true);
  });

  it('request.headers: exact, prefix, suffix; * is presence, even empty; several values are joined with ,', () => {
    const e = allowWhen('key: request.headers[User-Agent]\n    values: ["Mozilla/*", "*-bot", "curl"]');
    assert.equal(e.evaluate(get('/', { headers: { 'user-agent': 'Mozilla/5.0' } })).allowed, true);
    assert.equal(e.evaluate(get('/', { headers: { 'user-agent': 'search-bot' } })).allowed, true);
    assert.equal(e.evaluate(get('/', { headers: { 'user-agent': 'curl' } })).allowed, true);
    assert.equal(e.evaluate(get('/', { headers: { 'user-agent': 'curl/8' } })).allowed, false);
    assert.equal(e.evaluate(get('/')).allowed, false, 'absent');
    const present = allowWhen('key: request.headers[x-token]\n    values: ["*"]');
    assert.equal(present.evaluate(get('/', { headers: { 'x-token': '' } })).allowed, true);
    assert.equal(present.evaluate(get('/')).allowed, false);
    const joined = allowWhen('key: request.headers[x-a]\n    values: ["1,2"]');
    assert.equal(joined.evaluate(get('/', { headers: { 'x-a': ['1', '2'] } })).allowed, true);
    const not = allowWhen('key: request.headers[x-token]\n    notValues: ["admin"]');
    assert.equal(not.evaluate(get('/')).allowed, true, 'absent header satisfies notValues');
    assert.equal(not.evaluate(get('/', { headers: { 'x-token': 'admin' } })).allowed, false);
  });

  it('source.*, remote.ip, destination.ip and connection.sni', () => {
    assert.equal(
      allowWhen(`key: source.principal\n    values: ["${FRONT}"]`).evaluate(get('/')).allowed,
      true,
    );
    assert.equal(
      allowWhen('key: source.namespace\n    values: ["sock-shop"]').evaluate(
        get('/', { sourcePrincipal: VM }),
      ).allowed,
      false,
    );
    assert.equal(
      allowWhen('key: source.serviceAccount\n    values: ["sock-shop/front-end"]').evaluate(get('/')).allowed,
      true,
    );
    assert.equal(
      allowWhen('key: source.trustDomain\n    values: ["*.org"]').evaluate(get('/')).allowed,
      true,
    );
    assert.equal(
      allowWhen('key: source.ip\n    values: ["10.0.0.0/8"]').evaluate(get('/', { sourceIp: '10.2.3.4' }))
        .allowed,
      true,
    );
    assert.equal(
      allowWhen('key: remote.ip\n    values: ["10.0.0.0/8"]').evaluate(
        get('/', { sourceIp: '1.1.1.1', remoteIp: '10.2.3.4' }),
      ).allowed,
      true,
    );
    const dest = allowWhen('key: destination.ip\n    values: ["192.168.1.10"]');
    assert.equal(dest.evaluate(get('/', { destinationIp: '192.168.1.10' })).allowed, true);
    assert.equal(dest.evaluate(get('/', { destinationIp: '192.168.1.11' })).allowed, false);
    const sni = allowWhen('key: connection.sni\n    values: ["*.sock-shop.svc"]');
    assert.equal(sni.evaluate(get('/', { sni: 'catalogue.sock-shop.svc' })).allowed, true);
    assert.equal(sni.evaluate(get('/')).allowed, false);
  });

  it('request.auth: principal, audiences, presenter, claims (nested, lists; only strings match)', () => {
    const auth = {
      principal: 'https://issuer.example.org/alice',
      audiences: ['catalogue', 'orders'],
      presenter: 'web-app',
      claims: { groups: ['dev', 'admin'], org: { team: 'shop', size: 12 }, admin: true },
    };
    const w = (cond: string) => allowWhen(cond).evaluate(get('/', { auth })).allowed;
    assert.equal(w('key: request.auth.principal\n    values: ["https://issuer.example.org/*"]'), true);
    assert.equal(w('key: request.auth.audiences\n    values: ["orders"]'), true);
    assert.equal(w('key: request.auth.audiences\n    values: ["payments"]'), false);
    assert.equal(w('key: request.auth.presenter\n    values: ["web-app"]'), true);
    assert.equal(w('key: request.auth.claims[groups]\n    values: ["admin"]'), true);
    assert.equal(w('key: request.auth.claims[org][team]\n    values: ["shop"]'), true);
    assert.equal(w('key: request.auth.claims[org][size]\n    values: ["12"]'), false);
    assert.equal(w('key: request.auth.claims[admin]\n    values: ["true"]'), false);
    assert.equal(w('key: request.auth.claims[missing]\n    notValues: ["x"]'), true);
    const rp = engine([doc('p', 'rules:\n- from:\n  - source:\n      requestPrincipals: ["*"]')]);
    assert.equal(rp.evaluate(get('/', { auth })).allowed, true);
    assert.equal(rp.evaluate(get('/')).allowed, false);
  });

  it('a header or claim named like a member of Object.prototype is absent unless the request has it', () => {
    // Node's req.headers inherits from Object.prototype: its `constructor` is not a header.
    const headers = Object.assign({}, { accept: '*/*' });
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const deny = engine([
        doc('deny', `action: DENY\nrules:\n- when:\n  - key: request.headers[${name}]\n    values: ["*"]`),
      ]);
      assert.equal(deny.evaluate(get('/', { headers })).allowed, true, `${name}: absent`);
      // Header names are case-insensitive; Node gives them in lower case.
      const own = JSON.parse(`{"${name.toLowerCase()}": "x"}`) as Record<string, string>;
      assert.equal(deny.evaluate(get('/', { headers: own })).allowed, false, `${name}: present`);
      const claim = allowWhen(`key: request.auth.claims[${name}]\n    values: ["*"]`);
      const auth = { principal: 'iss/sub', audiences: [], claims: { sub: 'sub' } };
      assert.equal(claim.evaluate(get('/', { auth })).allowed, false, `claim ${name}: absent`);
      const withClaim = { ...auth, claims: JSON.parse(`{"${name}": "x"}`) as Record<string, unknown> };
      assert.equal(claim.evaluate(get('/', { auth: withClaim })).allowed, true, `claim ${name}: present`);
    }
  });
});

describe("Istio's TCP rule for HTTP-only fields", () => {
  const ALLOW_GET = doc(
    'allow-get',
    `rules:\n- from:\n  - source:\n      principals: ["${FRONT}"]\n  to:\n  - operation:\n      methods: ["GET"]\n- from:\n  - source:\n      principals: ["${VM}"]`,
  );
  const DENY_JWTLESS = doc(
    'deny-jwtless',
    'action: DENY\nrules:\n- from:\n  - source:\n      notRequestPrincipals: ["*"]\n  to:\n  - operation:\n      ports: ["5432"]\n  when:\n  - key: request.headers[x-debug]\n    values: ["1"]',
  );

  it('in an ALLOW rule they make the rule match nothing on TCP (other rules still apply)', () => {
    const e = engine([ALLOW_GET], CATALOGUE, { protocol: 'tcp' });
    assert.equal(e.evaluate(tcp()).allowed, false, 'rule 0 has methods');
    assert.deepEqual(e.evaluate(tcp({ sourcePrincipal: VM })).decidedBy, {
      policy: 'sock-shop/allow-get',
      action: 'ALLOW',
      rule: 1,
    });
    assert.equal(e.warnings.length, 1);
    assert.deepEqual(
      { ...e.warnings[0], message: undefined },
      { file: 'policies.yaml', line: 13, policy: 'sock-shop/allow-get', message: undefined },
    );
    assert.match(
      e.warnings[0]!.message,
      /^spec\.rules\[0\]\.to\[0\]\.operation\.methods is HTTP-only: on TCP connections ALLOW rule 0 matches nothing/,
    );
    // The same policies on HTTP: rule 0 applies, and no warning is given.
    const h = engine([ALLOW_GET], CATALOGUE, { protocol: 'http' });
    assert.equal(h.evaluate(get('/')).allowed, true);
    assert.deepEqual(h.warnings, []);
  });

  it('in a DENY rule they are dropped, so the rest of the rule denies more on TCP', () => {
    const e = engine([DENY_JWTLESS, ALLOW_ALL], CATALOGUE, { protocol: 'tcp' });
    assert.equal(e.evaluate(tcp()).allowed, false, 'port 5432: notRequestPrincipals and the header dropped');
    assert.equal(e.evaluate(tcp({ destinationPort: 6379 })).allowed, true);
    assert.deepEqual(
      e.warnings.map((w) => [w.line, w.message.replace(/ is HTTP-only.*/, '')]),
      [
        [11, 'spec.rules[0].from[0].source.notRequestPrincipals'],
        [16, 'spec.rules[0].when[0] (request.headers[x-debug])'],
      ],
    );
    assert.match(e.warnings[0]!.message, /ignored, so DENY rule 0 matches more connections than on HTTP/);
    // On HTTP the header condition applies: no x-debug header, no denial.
    const h = engine([DENY_JWTLESS, ALLOW_ALL]);
    assert.equal(h.evaluate(get('/', { destinationPort: 5432 })).allowed, true);
    assert.equal(h.evaluate(get('/', { destinationPort: 5432, headers: { 'x-debug': '1' } })).allowed, false);
  });

  it('AUDIT rules widen like DENY rules (Istio drops the field for both)', () => {
    const audit = doc('audit-get', 'action: AUDIT\nrules:\n- to:\n  - operation:\n      methods: ["GET"]');
    const e = engine([audit], CATALOGUE, { protocol: 'tcp' });
    assert.deepEqual(
      e.evaluate(tcp()).audited.map((a) => a.policy),
      ['sock-shop/audit-get'],
    );
    assert.equal(e.warnings.length, 1);
  });

  it('an engine without a protocol takes it from each request', () => {
    const e = engine([ALLOW_GET]);
    assert.equal(e.evaluate(get('/')).allowed, true);
    assert.equal(e.evaluate(tcp()).allowed, false);
    assert.equal(e.warnings.length, 1, 'TCP warnings are reported when TCP requests may come');
  });

  it('a request of the other protocol than the engine was created for is a TypeError', () => {
    const e = engine([ALLOW_GET], CATALOGUE, { protocol: 'tcp' });
    assert.throws(() => e.evaluate(get('/')), {
      name: 'TypeError',
      message: /created for tcp requests; got a http request/,
    });
    assert.throws(() => e.evaluate({ ...tcp(), protocol: 'udp' as 'tcp' }), {
      name: 'TypeError',
      message: /"http" or "tcp"/,
    });
  });

  it('on TCP, HTTP attributes of a request are not seen even if given', () => {
    const e = engine([doc('p', 'rules:\n- when:\n  - key: connection.sni\n    values: ["*"]')]);
    assert.equal(e.evaluate({ ...tcp(), sni: 'db.sock-shop.svc' }).allowed, true);
  });
});

describe('the index by principal and namespace', () => {
  it('the first matching rule in load order decides, indexed or not', () => {
    const byPrincipal = doc('by-principal', `rules:\n- from:\n  - source:\n      principals: ["${FRONT}"]`);
    const byPrefix = doc(
      'by-prefix',
      'rules:\n- from:\n  - source:\n      principals: ["example.org/ns/sock-shop/*"]',
    );
    const byNamespace = doc('by-namespace', 'rules:\n- from:\n  - source:\n      namespaces: ["sock-shop"]');
    const orders: [string[], string][] = [
      [[byPrincipal, byPrefix, byNamespace], 'sock-shop/by-principal'],
      [[byPrefix, byPrincipal, byNamespace], 'sock-shop/by-prefix'],
      [[byNamespace, byPrefix, byPrincipal], 'sock-shop/by-namespace'],
      [[byPrefix, byNamespace, byPrincipal], 'sock-shop/by-prefix'],
    ];
    for (const [docs, expected] of orders) {
      assert.equal(engine(docs).evaluate(get('/')).decidedBy?.policy, expected);
    }
  });

  it('peers remembered past the size of the memory still get the same decisions, on HTTP and TCP', () => {
    const e = engine([
      doc('front', `rules:\n- from:\n  - source:\n      principals: ["${FRONT}"]`),
      doc('team', 'rules:\n- from:\n  - source:\n      principals: ["example.org/ns/team/*"]'),
    ]);
    const decide = (principal: string) => e.evaluate(get('/', { sourcePrincipal: principal })).allowed;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 12_000; i++) {
        assert.equal(decide(`spiffe://example.org/ns/team/sa/s${i}`), true);
        if (i % 1000 === 0) {
          assert.equal(decide(FRONT), true);
          assert.equal(decide(ORDERS), false);
          assert.equal(e.evaluate(tcp({ sourcePrincipal: ORDERS })).allowed, false);
          assert.equal(
            e.evaluate(tcp({ sourcePrincipal: `spiffe://example.org/ns/team/sa/s${i}` })).allowed,
            true,
          );
        }
      }
    }
    // The same principal with and without spiffe:// is one peer for the rules.
    assert.equal(decide('example.org/ns/sock-shop/sa/front-end'), true);
  });

  it('a rule mixing principal and namespace sources is found by either', () => {
    const e = engine([
      doc(
        'mixed',
        `rules:\n- from:\n  - source:\n      principals: ["${VM}"]\n  - source:\n      namespaces: ["payments"]`,
      ),
    ]);
    assert.equal(e.evaluate(get('/', { sourcePrincipal: VM })).allowed, true);
    assert.equal(
      e.evaluate(get('/', { sourcePrincipal: 'spiffe://example.org/ns/payments/sa/x' })).allowed,
      true,
    );
    assert.equal(e.evaluate(get('/')).allowed, false);
  });

  it('rules found by principal prefix or suffix, by path segment and by method match as unindexed ones do', () => {
    const rules = [
      doc(
        'team',
        'rules:\n- from:\n  - source:\n      principals: ["example.org/ns/sock-shop/*", "spiffe://example.org/vm/*"]',
      ),
      doc('sa', 'rules:\n- from:\n  - source:\n      principals: ["*/sa/orders"]'),
      doc('admin', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin/*", "/admin"]'),
      doc('delete', 'action: DENY\nrules:\n- to:\n  - operation:\n      methods: ["DELETE"]'),
      doc('health', 'rules:\n- to:\n  - operation:\n      paths: ["/healthz"]'),
    ];
    const e = engine(rules);
    const other = 'spiffe://partner.org/ns/x/sa/y';
    const cases: [PolicyRequest, boolean, string | undefined][] = [
      [get('/'), true, 'sock-shop/team'],
      [get('/', { sourcePrincipal: VM }), true, 'sock-shop/team'],
      [get('/', { sourcePrincipal: 'spiffe://partner.org/ns/shop/sa/orders' }), true, 'sock-shop/sa'],
      [get('/', { sourcePrincipal: other }), false, undefined],
      [get('/', { sourcePrincipal: 'example.org/ns/sock-shop' }), false, undefined],
      [get('/admin?x=1'), false, 'sock-shop/admin'],
      [get('/admin/users'), false, 'sock-shop/admin'],
      [get('/administrator'), true, 'sock-shop/team'],
      [get('/x', { method: 'DELETE' }), false, 'sock-shop/delete'],
      [get('/healthz', { sourcePrincipal: other }), true, 'sock-shop/health'],
      [get('/healthz/deep', { sourcePrincipal: other }), false, undefined],
    ];
    for (const [req, allowed, by] of cases) {
      const d = e.evaluate(req);
      assert.equal(
        d.allowed,
        allowed,
        `${req.sourcePrincipal} ${req.http?.method} ${req.http?.path}: ${d.reason}`,
      );
      assert.equal(d.decidedBy?.policy, by, `${req.sourcePrincipal} ${req.http?.path}`);
    }
    // On TCP a DENY rule's paths and methods are dropped: it denies every connection, index or not.
    const t = engine(rules, CATALOGUE, { protocol: 'tcp' });
    assert.equal(t.evaluate(tcp()).decidedBy?.policy, 'sock-shop/admin');
  });

  it('the first matching rule in load order decides across all the indexes', () => {
    const byPath = doc('by-path', 'rules:\n- to:\n  - operation:\n      paths: ["/catalogue/*"]');
    const byMethod = doc('by-method', 'rules:\n- to:\n  - operation:\n      methods: ["GET"]');
    const bySuffix = doc('by-suffix', 'rules:\n- from:\n  - source:\n      principals: ["*/front-end"]');
    const unindexed = doc('unindexed', 'rules:\n- to:\n  - operation:\n      hosts: ["*"]');
    const all = [byPath, byMethod, bySuffix, unindexed];
    for (let k = 0; k < all.length; k++) {
      const order = [...all.slice(k), ...all.slice(0, k)];
      const first = order[0]!.match(/name: (\S+)/)![1];
      assert.equal(engine(order).evaluate(get('/catalogue/1')).decidedBy?.policy, `sock-shop/${first}`);
    }
  });

  it('1,000 exact-principal rules: each principal reaches its own rule only', () => {
    const docs = Array.from({ length: 1000 }, (_, i) =>
      doc(
        `p${i}`,
        `rules:\n- from:\n  - source:\n      principals: ["example.org/ns/n${i}/sa/s${i}"]\n  to:\n  - operation:\n      paths: ["/p${i}"]`,
      ),
    );
    const e = engine(docs);
    assert.equal(
      e.evaluate(get('/p7', { sourcePrincipal: 'spiffe://example.org/ns/n7/sa/s7' })).decidedBy?.policy,
      'sock-shop/p7',
    );
    assert.equal(
      e.evaluate(get('/p8', { sourcePrincipal: 'spiffe://example.org/ns/n7/sa/s7' })).allowed,
      false,
    );
    assert.equal(
      e.evaluate(get('/p999', { sourcePrincipal: 'spiffe://example.org/ns/n999/sa/s999' })).allowed,
      true,
    );
  });
});

describe('createPolicyEngine arguments', () => {
  it('a policy built by hand with a value the loader refuses is ERR_POLICY_INVALID, not a rule that never matches', () => {
    const [loaded] = parsePolicies(
      doc('deny-bad', 'action: DENY\nrules:\n- from:\n  - source:\n      ipBlocks: ["10.0.0.0/8"]'),
      'hand.yaml',
    ).policies;
    const rule = loaded!.spec.rules[0]!;
    const bad: AuthorizationPolicy = {
      ...loaded!,
      spec: {
        ...loaded!.spec,
        rules: [
          {
            ...rule,
            from: [{ source: { ipBlocks: ['10.0.0.0/40'] } }],
            when: [{ key: 'source.ipp', values: ['x'] }],
          },
        ],
      },
    };
    assert.throws(
      () => createPolicyEngine([bad], CATALOGUE),
      (err: unknown) =>
        isTesseraError(err, TesseraErrorCode.POLICY_INVALID) &&
        /hand\.yaml:\d+: sock-shop\/deny-bad: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: "10\.0\.0\.0\/40" has a bad prefix length/.test(
          err.message,
        ) &&
        /spec\.rules\[0\]\.when\[0\]: unknown key "source\.ipp"/.test(err.message),
    );
    assert.throws(() => parsePolicies(undefined as unknown as string, 'x.yaml'), { name: 'TypeError' });
  });

  it('a malformed workload is a TypeError naming the field', () => {
    const { policies } = parsePolicies(ALLOW_ALL, 'a.yaml');
    assert.throws(() => createPolicyEngine(policies, { namespace: '', labels: {} }), {
      name: 'TypeError',
      message: /workload\.namespace/,
    });
    assert.throws(() => createPolicyEngine(policies, { namespace: 'x' } as PolicyWorkload), {
      name: 'TypeError',
      message: /workload\.labels/,
    });
    assert.throws(() => createPolicyEngine(policies, CATALOGUE, { protocol: 'udp' as 'tcp' }), {
      name: 'TypeError',
      message: /protocol/,
    });
  });
});
